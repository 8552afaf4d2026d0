"""Query detectors: score single queries (or flag clients) for how likely they come from an extraction attack.

Importing the package declares them without importing torch or ART: :mod:`.specs` declares the
ones whose modules are heavy (same, same_x, same_y, fusion), and the light detector modules
register where they live. The interface is :mod:`.detectors`.
"""

from . import specs  # noqa: F401  (declaration side effects)
from . import baselines, edm, oe  # noqa: F401  (detectors that use the victim itself)
from . import prada  # noqa: F401  (per-client detector)
