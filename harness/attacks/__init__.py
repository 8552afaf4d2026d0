"""Extraction attacks (ART's, wrapped, and our own ART-style ones); importing registers them."""

from . import art_extraction, data_free, jbda, tramer, tramer_trees  # noqa: F401  (registration side effects)
