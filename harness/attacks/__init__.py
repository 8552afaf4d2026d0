"""Extraction attacks (ART's, wrapped, and our own ART-style ones).

Importing the package declares every built-in attack (:mod:`.specs`) without importing torch or
ART; each implementation module is imported when a run first uses it.
"""

from . import specs  # noqa: F401  (declaration side effects)
