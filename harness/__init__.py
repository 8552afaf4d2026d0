"""stealcheck: a security evaluation harness for model extraction, built on ART."""

__version__ = "0.1.0"
