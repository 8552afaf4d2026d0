"""Defences (output perturbation, active defences) and query detectors.

Importing the package declares them without importing torch or ART: :mod:`.specs` declares the
ones whose modules are heavy, and the light detector modules register where they live.
"""

from . import specs  # noqa: F401  (declaration side effects)
from . import baselines, edm, oe  # noqa: F401  (detectors that use the victim itself)
from . import prada  # noqa: F401  (per-client detector)
