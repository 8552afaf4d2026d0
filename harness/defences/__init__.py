"""Defences: output perturbation and active defences (reject, proof of work, misinformation).

Importing the package declares them without importing torch or ART (:mod:`.specs`). The query
detectors that drive the active defences live in :mod:`stealcheck.detectors`.
"""

from . import specs  # noqa: F401  (declaration side effects)
