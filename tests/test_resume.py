"""Resume and run bookkeeping, end to end on the tiny scenario.

One uninterrupted run is compared with a run killed with SIGKILL midway (in a child process, so the
kill is real: no ``finally`` block runs) and then resumed with ``--resume``. Each run has a cache
folder of its own, so nothing computed by one is reused by the other. Also here: the cell count
shared by the progress output and summary.json, the wall time summed over sessions, plain progress
lines when stderr is not a terminal, and no run folder left behind by invalid input.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_scenario
from stealcheck.cli import main

# 2 utility cells + 2 seeds x 2 defences x 2 attacks
TOTAL_CELLS = 2 + 8
# The child process blocks in copycat at seed 1 (the 6th extraction cell): by then the 2 utility
# cells and 5 extraction cells are journalled.
CELLS_BEFORE_KILL = 2 + 5

# A child process that runs the CLI but hangs in copycat's first seed-1 cell, to be killed there.
HANGING_CLI = textwrap.dedent("""
    import sys, time
    from stealcheck import registry
    from stealcheck.cli import main
    from stealcheck.seeds import attack_seed

    copycat = registry.attacks.get("copycat").obj
    original_run = copycat.run

    def run(self, ctx):
        if ctx.seed == attack_seed(0, 1, "copycat"):  # the cell of scenario seed 1
            time.sleep(600)
        yield from original_run(self, ctx)

    copycat.run = run
    sys.exit(main(sys.argv[1:]))
""")


def is_timing_metric(metric: str) -> bool:
    """Metrics that measure wall-clock time (they differ between any two runs)."""
    return (metric.endswith(("_seconds", "_ms", "_ms_per_query")) or metric.startswith("latency")
            or metric == "score_cost_ratio")


def without_timings(path: Path) -> list[bytes]:
    """results.csv's lines, as raw bytes, less the rows of timing metrics."""
    kept = []
    for line in path.read_bytes().splitlines(keepends=True):  # line endings kept: they are compared too
        fields = next(csv.reader([line.decode().rstrip("\r\n")]))
        if not (len(fields) >= 8 and is_timing_metric(fields[6])):
            kept.append(line)
    return kept


def cli(argv: list[str], cache: Path) -> tuple[int, str, str]:
    """Run the CLI in this process with its own cache; stdout and stderr captured (so not a TTY)."""
    err, out = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEALCHECK_CACHE_DIR", str(cache))
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and a run killed with SIGKILL midway then resumed (≈20 s)."""
    root = tmp_path_factory.mktemp("resume")
    scenario = root / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(tiny_scenario(output={"dir": str(root / "runs")}), sort_keys=False))
    out = {"root": root}
    out["whole"] = cli(["run", str(scenario), "--out", str(root / "whole")], root / "cache-whole")

    killed = root / "killed"
    env = {**os.environ, "STEALCHECK_CACHE_DIR": str(root / "cache-killed")}
    child = subprocess.Popen([sys.executable, "-c", HANGING_CLI, "run", str(scenario), "--quiet", "--out",
                              str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = killed / "cells.jsonl"
    deadline = time.monotonic() + 300
    while not (journal.exists() and len(journal.read_text().splitlines()) >= CELLS_BEFORE_KILL):
        if child.poll() is not None:
            pytest.fail(f"the child run ended early ({child.returncode}): {child.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("the child run did not reach the cell where it hangs")
        time.sleep(0.1)
    time.sleep(0.5)  # let it enter the hanging cell (the summary is saved just after the journal)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
    out["killed_summary"] = json.loads((killed / "summary.json").read_text())
    out["killed_journal"] = journal.read_text().splitlines()
    out["resumed"] = cli(["run", str(scenario), "--resume", "--out", str(killed)], root / "cache-killed")
    return out


def test_killed_then_resumed_results_equal_an_uninterrupted_run_byte_for_byte(runs):
    assert runs["whole"][0] == 0, runs["whole"][2]
    assert runs["resumed"][0] == 0, runs["resumed"][2]
    assert len(runs["killed_journal"]) == CELLS_BEFORE_KILL
    whole = without_timings(runs["root"] / "whole" / "results.csv")
    resumed = without_timings(runs["root"] / "killed" / "results.csv")
    assert len(whole) > 100
    assert resumed == whole
    # budgets and seeds of the rows kept through the resume still read as integers ('100', not '100.0')
    with open(runs["root"] / "killed" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["budget"] for r in rows} == {"", "50", "100"} and {r["seed"] for r in rows} == {"", "0", "1"}


def test_resumed_run_counts_restored_cells_as_done(runs):
    killed = runs["killed_summary"]["cells"]
    assert killed["total"] == TOTAL_CELLS and killed["done"] == CELLS_BEFORE_KILL
    for run in ("whole", "killed"):
        cells = json.loads((runs["root"] / run / "summary.json").read_text())["cells"]
        assert cells["total"] == cells["done"] == TOTAL_CELLS, run
    # the progress lines count the same cells as the summary, restored ones included
    lines = [line for line in runs["resumed"][2].splitlines() if line.startswith("[")]
    assert len(lines) == TOTAL_CELLS - CELLS_BEFORE_KILL
    assert lines[0].startswith(f"[{CELLS_BEFORE_KILL + 1}/{TOTAL_CELLS}]")
    assert lines[-1].startswith(f"[{TOTAL_CELLS}/{TOTAL_CELLS}]")


def test_wall_time_adds_up_the_sessions(runs):
    killed = runs["killed_summary"]
    # saved as the run went on, so a killed session's time up to its last finished cell is kept
    assert killed["status"] == "running" and killed["wall_seconds"] > 0
    summary = json.loads((runs["root"] / "killed" / "summary.json").read_text())
    sessions = summary["sessions"]
    assert len(sessions) == 2
    assert sessions[0]["wall_seconds"] == killed["wall_seconds"]
    assert sessions[0]["status"] == "killed" and sessions[1]["status"] == "complete"
    assert summary["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in sessions), abs=0.02)
    assert summary["wall_seconds"] > sessions[1]["wall_seconds"] > 0
    whole = json.loads((runs["root"] / "whole" / "summary.json").read_text())
    assert len(whole["sessions"]) == 1 and whole["wall_seconds"] == whole["sessions"][0]["wall_seconds"]


def test_progress_is_one_plain_line_per_cell_when_stderr_is_not_a_terminal(runs):
    _, stdout, stderr = runs["whole"]
    assert "\r" not in stderr and "\r" not in stdout
    lines = [line for line in stderr.splitlines() if line.startswith("[")]
    assert len(lines) == TOTAL_CELLS, stderr
    assert [line.split("]")[0] for line in lines] == [f"[{i}/{TOTAL_CELLS}" for i in range(1, TOTAL_CELLS + 1)]
    assert any(line.endswith(" s") and "knockoff:strategy=random x none seed 0: done in" in line for line in lines)
    assert "\r" not in runs["resumed"][2]


def test_quiet_prints_no_progress(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario(seeds=[0], budgets=[50], defences=["none"], attacks=["copycat"],
                                                 output={"dir": str(tmp_path / "runs")}), sort_keys=False))
    code, _, stderr = cli(["run", str(path), "--quiet", "--out", str(tmp_path / "run")], tmp_path / "cache")
    assert code == 0, stderr
    assert stderr == ""


def test_invalid_data_file_leaves_no_run_folder(tmp_path):
    data = {"victim_train": {"source": "digits", "split": "train"},
            "test": {"source": "npz", "path": "missing.npz"},
            "attacker": {"source": "digits", "split": "all"}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario(data=data, output={"dir": str(tmp_path / "runs")}), sort_keys=False))
    code, _, stderr = cli(["run", str(path), "--quiet"], tmp_path / "cache")
    assert code == 2 and "missing.npz" in stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))
    # with --out as well: the folder is not made
    code, _, stderr = cli(["run", str(path), "--quiet", "--out", str(tmp_path / "out")], tmp_path / "cache")
    assert code == 2 and not (tmp_path / "out").exists()


def _fail_in_first_cell(mp: pytest.MonkeyPatch) -> None:
    """Make the first cell raise a ScenarioError, as a check that can only run once the folder exists."""
    from stealcheck import cells
    from stealcheck.errors import ScenarioError

    def fail(*args, **kwargs):
        raise ScenarioError("a late input error")

    mp.setattr(cells, "UtilityEval", fail)


def test_late_input_error_before_any_cell_removes_the_new_folder(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario(output={"dir": str(tmp_path / "runs")}), sort_keys=False))
    (tmp_path / "empty").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        _fail_in_first_cell(mp)
        code, _, stderr = cli(["run", str(path), "--quiet"], tmp_path / "cache")
        assert code == 2 and "a late input error" in stderr
        assert not (tmp_path / "runs").exists()
        # an empty --out folder the user made stays, and stays empty
        code, _, _ = cli(["run", str(path), "--quiet", "--out", str(tmp_path / "empty")], tmp_path / "cache")
        assert code == 2 and (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_input_error_while_resuming_keeps_the_folder(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["root"] / "whole", run)
    (run / "cells.jsonl").write_text("")  # as if no cell had finished
    with pytest.MonkeyPatch.context() as mp:
        _fail_in_first_cell(mp)
        code, _, _ = cli(["run", str(runs["root"] / "tiny.yaml"), "--quiet", "--resume", "--out", str(run)],
                         tmp_path / "cache")
    assert code == 2 and (run / "summary.json").is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_cell_count_with_detectors(tmp_path):
    """Detector costs and detection cells are cells too, counted once by the progress lines and the summary."""
    from stealcheck.runner import planned_cells
    from stealcheck.scenario import build_scenario

    data = tiny_scenario(seeds=[0], budgets=[50], defences=["none"], attacks=["copycat", "knockoff"],
                         detectors=["msp"], detection={"budgets": [50], "attacks": ["copycat"]},
                         output={"dir": str(tmp_path / "runs")})
    assert planned_cells(build_scenario(data)) == [
        "detectors|||", "utility|none||", "extraction|none|copycat|0", "extraction|none|knockoff|0",
        "detection||copycat|0"]
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, stderr = cli(["run", str(path), "--out", str(tmp_path / "run")], tmp_path / "cache")
    assert code == 0, stderr
    cells = json.loads((tmp_path / "run" / "summary.json").read_text())["cells"]
    assert cells["total"] == cells["done"] == 5
    assert [line.split("]")[0] for line in stderr.splitlines() if line.startswith("[")] == \
        [f"[{i}/5" for i in range(1, 6)]
