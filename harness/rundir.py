"""The run folder: where it is, what a resume continues, and what summary.json records of the machine."""

from __future__ import annotations

import platform
import shutil
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path

from .errors import ScenarioError
from .results import read_summary
from .scenario import Scenario

PACKAGES = ("stealcheck", "adversarial-robustness-toolbox", "torch", "torchvision", "timm", "scikit-learn",
            "numpy", "pandas", "pydantic", "mlxtend", "distributed")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The git revision of the stealcheck source tree, when it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def default_run_dir(scenario: Scenario) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(scenario.model.output.dir) / scenario.name / stamp


def latest_unfinished_run(scenario: Scenario) -> Path | None:
    parent = Path(scenario.model.output.dir) / scenario.name
    if not parent.exists():
        return None
    for run in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        try:
            if read_summary(run).get("status") != "complete":
                return run
        except (ScenarioError, ValueError):
            continue
    return None


def resolve_run_dir(scenario: Scenario, out_dir: str | Path | None, resume: bool) -> Path:
    """The run folder (not made here): new or empty, or with ``resume`` an unfinished run's."""
    if resume:
        run_dir = Path(out_dir) if out_dir else latest_unfinished_run(scenario)
        if run_dir is None or not (run_dir / "summary.json").exists():
            raise ScenarioError(f"--resume: no unfinished run of '{scenario.name}' to resume"
                                + (f" in {out_dir}" if out_dir else f" under {scenario.model.output.dir}/"))
        return run_dir
    run_dir = Path(out_dir) if out_dir else default_run_dir(scenario)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ScenarioError(f"run folder {run_dir} exists and is not empty; use --resume to continue it "
                            "or choose another --out.")
    return run_dir


def discard_run_dir(run_dir: Path, made: list[Path]) -> None:
    """Remove what the run made of its folder: the folder (emptied if it was there before) and new parents."""
    shutil.rmtree(run_dir, ignore_errors=True)
    if run_dir not in made:
        run_dir.mkdir(parents=True, exist_ok=True)  # an empty --out folder given by the user stays
    for parent in made:
        if parent != run_dir:
            try:
                parent.rmdir()
            except OSError:  # not empty: something else lives there
                break
