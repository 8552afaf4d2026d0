"""Unintended interactions: several defences deployed at once, each pair measured against each defence alone.

Importing the package declares the training-time defences without importing torch, ART or Opacus
(:mod:`.specs`).
"""

from . import specs  # noqa: F401  (declaration side effects)
