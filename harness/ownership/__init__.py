"""Ownership resolution: watermarks (backdoor, DAWN), fingerprints and dataset inference, verified on every
stolen copy, on independent models and on the victim, and the false claims against them.

Importing the package declares the schemes without importing torch or ART (:mod:`.specs`).
"""

from . import specs  # noqa: F401  (declaration side effects)
