"""Placeholder replaced by the HTML report builder."""

from pathlib import Path


def build_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.html"
    path.write_text("<html><body>report pending</body></html>")
    return path
