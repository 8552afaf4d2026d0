"""Victim adapters (PyTorch, scikit-learn) and data sources; importing registers them."""

from . import data, sklearn_victim, torch_victim  # noqa: F401  (registration side effects)
from . import glyphs  # noqa: F401  (registration: the built-in outlier set)
