"""Victim adapters (PyTorch, scikit-learn) and data sources.

Importing the package registers the data sources and declares the victim kinds (:mod:`.specs`);
the adapters, which import torch, ART and scikit-learn, load when a run builds a victim.
"""

from . import data, glyphs, specs  # noqa: F401  (registration side effects)
