"""Reports built from a run folder's results.csv and summary.json (no re-run)."""

from .html import build_report  # noqa: F401
