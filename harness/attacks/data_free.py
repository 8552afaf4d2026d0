"""Data-free extraction (DFME, MAZE): being written."""
