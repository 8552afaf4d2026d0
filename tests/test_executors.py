"""Executors: a failed cell is retried, then recorded while the grid goes on; a 2-worker Dask
LocalCluster gives the values the local executor gives; a run started on one resumes on the other."""

from __future__ import annotations

import contextlib
import io
import json

import pandas as pd
import pytest
import yaml
from conftest import tiny_scenario
from stealcheck import registry
from stealcheck.cli import main
from stealcheck.results import read_results

SMALL = dict(seeds=[0, 1], budgets=[50], defences=["none", "label_only"], attacks=["copycat"])


def cli(argv: list[str], cache) -> tuple[int, str]:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEALCHECK_CACHE_DIR", str(cache))
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    return code, err.getvalue()


def values(run_dir) -> pd.DataFrame:
    """results.csv less its timing rows, in a fixed order (cells finish in any order on a cluster)."""
    frame = read_results(run_dir)
    timing = frame["metric"].str.contains("seconds|_ms|latency|cost_ratio")
    return frame[~timing].sort_values(["kind", "defence", "attack", "seed", "budget", "metric"]).reset_index(drop=True)


@pytest.fixture
def scenario_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario(**SMALL, output={"dir": str(tmp_path / "runs")}), sort_keys=False))
    return path


def test_failed_cell_is_retried_then_recorded_and_the_rest_goes_on(tmp_path, scenario_file, monkeypatch):
    copycat = registry.attacks.get("copycat").obj
    original, calls = copycat.run, []

    def broken(self, ctx):
        calls.append(1)
        if len(calls) <= 2:  # the first cell's first try and its retry
            raise RuntimeError("out of memory")
        yield from original(self, ctx)

    monkeypatch.setattr(copycat, "run", broken)
    code, stderr = cli(["run", str(scenario_file), "--out", str(tmp_path / "run")], tmp_path / "cache")
    assert code == 3, stderr
    assert "FAILED: RuntimeError: out of memory" in stderr and "--resume" in stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "partial"
    assert summary["failed_cells"] == {"extraction|none|copycat|0": "RuntimeError: out of memory"}
    assert summary["cells"]["done"] == 5 and summary["cells"]["failed"] == 1
    monkeypatch.setattr(copycat, "run", original)
    code, stderr = cli(["run", str(scenario_file), "--resume", "--out", str(tmp_path / "run")], tmp_path / "cache")
    assert code == 0, stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "complete"


@pytest.mark.slow  # starts a 2-worker LocalCluster (~10 s); CI runs it with the slow set (.ci/run)
def test_dask_local_cluster_gives_the_local_values_and_resumes_either_way(tmp_path, scenario_file):
    pytest.importorskip("distributed")
    code, stderr = cli(["run", str(scenario_file), "--quiet", "--out", str(tmp_path / "local")], tmp_path / "c1")
    assert code == 0, stderr
    code, stderr = cli(["run", str(scenario_file), "--executor", "dask", "--workers", "2", "--out",
                        str(tmp_path / "dask")], tmp_path / "c2")
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == [f"[{i}/6" for i in range(1, 7)]  # done across workers
    pd.testing.assert_frame_equal(values(tmp_path / "local"), values(tmp_path / "dask"), check_exact=True)
    # a run begun locally and finished on the cluster
    half = tmp_path / "half"
    journal = (tmp_path / "local" / "cells.jsonl").read_text().splitlines()
    for name in ("results.csv", "summary.json", "scenario.yaml"):
        (half / name).parent.mkdir(exist_ok=True)
        (half / name).write_bytes((tmp_path / "local" / name).read_bytes())
    (half / "cells.jsonl").write_text("\n".join(journal[:3]) + "\n")
    code, stderr = cli(["run", str(scenario_file), "--resume", "--executor", "dask", "--workers", "2", "--quiet",
                        "--out", str(half)], tmp_path / "c3")
    assert code == 0, stderr
    pd.testing.assert_frame_equal(values(tmp_path / "local"), values(half), check_exact=True)
