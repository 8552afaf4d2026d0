"""End to end: `stealcheck run` on a tiny scenario (a few seconds per run on CPU), resume,
determinism, the run folder's files; plus `stealcheck list` and `stealcheck report`."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
import yaml

from conftest import tiny_scenario
from stealcheck import registry
from stealcheck.cli import main
from stealcheck.results import COLUMNS, ResultsStore, cell_key, read_results
from stealcheck.seeds import attack_seed

KEY = ["kind", "defence", "attack", "budget", "seed", "metric"]
PASSING_GATES = [
    {"metric": "queries_used", "attack": "copycat", "defence": "none", "min": 100, "max": 100,
     "name": "copycat spends exactly its budget"},
    {"metric": "fidelity", "attack": "knockoff", "defence": "none", "min": 0.3,
     "name": "knockoff copies the undefended victim"},
    {"metric": "victim_accuracy", "defence": "none", "min": 0.7},
]
FAILING_GATES = [
    {"metric": "queries_used", "max": 10, "name": "impossible: at most 10 queries"},
    {"metric": "fidelity", "attack": "copycat", "min": 0.0, "name": "trivially true"},
]


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Results without wall-clock timings, in a canonical order, with numeric budget/seed."""
    f = frame[~frame["metric"].isin(["attack_seconds", "latency_mean_ms", "latency_p95_ms"])].copy()
    f["attack"] = f["attack"].fillna("")
    for c in ("budget", "seed"):
        f[c] = pd.to_numeric(f[c], errors="coerce").fillna(-1)
    return f.sort_values(KEY).reset_index(drop=True)[KEY + ["value"]]


def _run(argv, capsys):
    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four CLI runs shared by the tests below (≈30 s on 2 cores)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("e2e")
    cache = root / "cache"
    out: dict = {"root": root}

    def cli(argv):  # capsys is function-scoped: capture by hand
        err, std = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            code = main(argv)
        return code, std.getvalue(), err.getvalue()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEALCHECK_CACHE_DIR", str(cache))
        passing = tiny_scenario(expect=PASSING_GATES, output={"dir": str(root / "runs")})
        failing = tiny_scenario(name="tiny-failing", expect=FAILING_GATES, output={"dir": str(root / "runs")})
        (root / "pass.yaml").write_text(yaml.safe_dump(passing, sort_keys=False))
        (root / "fail.yaml").write_text(yaml.safe_dump(failing, sort_keys=False))

        out["first"] = cli(["run", str(root / "pass.yaml"), "--quiet", "--out", str(root / "first")])
        # the same scenario again, recomputing everything (no cached victim, no cached cells)
        out["second"] = cli(["run", str(root / "pass.yaml"), "--quiet", "--fresh", "--out", str(root / "second")])
        # a failing gate; the cells themselves come from the cell cache
        out["failing"] = cli(["run", str(root / "fail.yaml"), "--quiet", "--out", str(root / "failing")])

        # an interrupted run: half of the cells journalled, status partial
        resumed = root / "resumed"
        shutil.copytree(root / "first", resumed)
        journal = (resumed / "cells.jsonl").read_text().splitlines()
        (resumed / "cells.jsonl").write_text("\n".join(journal[: len(journal) // 2]) + "\n")
        summary = json.loads((resumed / "summary.json").read_text())
        summary["status"] = "partial"
        (resumed / "summary.json").write_text(json.dumps(summary))
        out["journal_before"] = journal
        out["resume"] = cli(["run", str(root / "pass.yaml"), "--quiet", "--fresh", "--resume", "--out",
                             str(resumed)])

        # a run interrupted for real (Ctrl-C during copycat, seed 1), then resumed
        copycat = registry.attacks.get("copycat").obj
        original_run = copycat.run

        def interrupted(self, ctx):
            if ctx.seed == attack_seed(0, 1, "copycat"):  # the cell of scenario seed 1
                raise KeyboardInterrupt
            yield from original_run(self, ctx)

        mp.setattr(copycat, "run", interrupted)
        out["interrupted"] = cli(["run", str(root / "pass.yaml"), "--quiet", "--fresh", "--out",
                                  str(root / "interrupted")])
        out["interrupted_summary"] = json.loads((root / "interrupted" / "summary.json").read_text())
        out["interrupted_journal"] = (root / "interrupted" / "cells.jsonl").read_text().splitlines()
        mp.setattr(copycat, "run", original_run)
        out["interrupted_resume"] = cli(["run", str(root / "pass.yaml"), "--quiet", "--resume", "--out",
                                         str(root / "interrupted")])
    return out


def _n_metrics(scope):
    """Rows per cell of ``scope``: computed metrics, plus attack_seconds for extraction cells."""
    computed = sum(1 for i in registry.metrics.items()
                   if i.caps.scope == scope and not i.caps.computed_by_runner)
    return computed + (1 if scope == "extraction" else 0)


def test_run_exit_code_and_terminal_output(runs):
    code, stdout, stderr = runs["first"]
    assert code == 0, stderr
    assert "run folder:" in stdout and "PASS" in stdout and "FAIL" not in stdout


def test_run_folder_files(runs):
    run = runs["root"] / "first"
    for name in ("results.csv", "summary.json", "scenario.yaml", "scenario.resolved.yaml", "junit.xml", "run.log",
                 "report.html", "cells.jsonl"):
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 0, name
    assert "victim ready" in (run / "run.log").read_text()


def test_results_csv_rows(runs):
    run = runs["root"] / "first"
    header = (run / "results.csv").read_text().splitlines()[0]
    assert header.split(",") == COLUMNS == ["kind", "victim", "defence", "attack", "budget", "seed", "metric",
                                            "value", "scheme"]
    frame = read_results(run)
    extraction = frame[frame["kind"] == "extraction"]
    utility = frame[frame["kind"] == "utility"]
    # 2 seeds x 2 defences x 2 attacks x 2 budgets, one row per extraction metric (timing included)
    # and per service metric (answered share, latency) of the client.
    assert len(extraction) == 2 * 2 * 2 * 2 * (_n_metrics("extraction") + 3)
    assert len(utility) == 2 * (_n_metrics("utility") + 3)
    assert set(extraction["attack"]) == {"knockoff:strategy=random", "copycat"}
    assert set(extraction["defence"]) == {"none", "label_only"}
    assert set(extraction["budget"].astype(int)) == {50, 100}
    assert set(extraction["seed"].astype(int)) == {0, 1}
    assert not _comparable(frame).duplicated(KEY).any()
    assert frame["value"].notna().all()


def test_queries_used_equals_budget_at_every_checkpoint(runs):
    frame = read_results(runs["root"] / "first")
    q = frame[frame["metric"] == "queries_used"]
    assert len(q) == 16
    assert (q["value"].astype(float) == q["budget"].astype(float)).all()


def test_label_only_defence_serves_one_hot_answers(runs):
    frame = read_results(runs["root"] / "first")
    util = frame[frame["kind"] == "utility"].set_index(["defence", "metric"])["value"]
    assert util[("none", "output_distortion")] == 0.0 and util[("none", "label_change_rate")] == 0.0
    assert util[("label_only", "label_change_rate")] == 0.0
    assert util[("label_only", "output_distortion")] > 0.1
    assert util[("label_only", "victim_accuracy")] == util[("none", "victim_accuracy")] > 0.7


def test_summary_json(runs):
    summary = json.loads((runs["root"] / "first" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["error"] is None
    for pkg in ("torch", "adversarial-robustness-toolbox", "numpy", "stealcheck"):
        assert summary["packages"][pkg], pkg
    as_written = yaml.safe_load((runs["root"] / "pass.yaml").read_text())
    assert summary["scenario_as_written"] == as_written
    assert summary["attacks"] == {"knockoff:strategy=random": "knockoff", "copycat": "copycat"}
    assert summary["victim"]["nb_classes"] == 10 and summary["victim"]["test_accuracy"] > 0.7
    assert [g["passed"] for g in summary["gates"]] == [True, True, True]
    # the test's own empty cache: the victim was trained and every cell computed
    assert summary["victim"]["cached"] is False and summary["cells"]["from_cache"] == 0


def test_resolved_scenario_is_complete_and_valid(runs, capsys):
    path = runs["root"] / "first" / "scenario.resolved.yaml"
    resolved = yaml.safe_load(path.read_text())
    assert resolved["victim"]["train"]["steps"] == 150
    assert resolved["thief"]["min_steps"] == 20 and resolved["thief"]["max_steps"] == 40
    assert "batch_size" in resolved["thief"]  # defaults filled in
    assert [a["id"] for a in resolved["attacks"]] == ["knockoff:strategy=random", "copycat"]
    assert resolved["attacks"][0]["params"]["use_probability"] is True
    code, out = _run(["validate", str(path)], capsys)
    assert code == 0, out.err


def test_junit_for_passing_run(runs):
    root = ET.parse(runs["root"] / "first" / "junit.xml").getroot()
    cases = root.findall("testcase")
    assert len(cases) == len(PASSING_GATES)
    assert all(c.find("failure") is None for c in cases)


def test_failing_gate_exit_code_and_junit(runs):
    code, stdout, stderr = runs["failing"]
    assert code == 1, stderr
    assert "1 expectation gate(s) failed" in stderr
    root = ET.parse(runs["root"] / "failing" / "junit.xml").getroot()
    cases = {c.get("name"): c for c in root.findall("testcase")}
    assert set(cases) == {g["name"] for g in FAILING_GATES}
    assert cases["impossible: at most 10 queries"].find("failure") is not None
    assert cases["trivially true"].find("failure") is None
    summary = json.loads((runs["root"] / "failing" / "summary.json").read_text())
    assert summary["status"] == "complete"


def test_cached_cells_reproduce_the_computed_ones(runs):
    # the failing-gate scenario differs only in its gates: its 8 cells come from the cell cache
    assert json.loads((runs["root"] / "failing" / "summary.json").read_text())["cells"]["from_cache"] == 8
    a = _comparable(read_results(runs["root"] / "first"))
    b = _comparable(read_results(runs["root"] / "failing"))
    pd.testing.assert_frame_equal(a, b)


def test_same_seed_same_results(runs):
    code, _, stderr = runs["second"]
    assert code == 0, stderr
    summary = json.loads((runs["root"] / "second" / "summary.json").read_text())
    assert summary["victim"]["cached"] is False  # --fresh: the victim was trained again
    assert summary["cells"]["from_cache"] == 0  # and every cell recomputed
    a = _comparable(read_results(runs["root"] / "first"))
    b = _comparable(read_results(runs["root"] / "second"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_resume_completes_an_interrupted_run(runs):
    code, _, stderr = runs["resume"]
    assert code == 0, stderr
    resumed = runs["root"] / "resumed"
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["resumed"] is True
    journal = (resumed / "cells.jsonl").read_text().splitlines()
    assert sorted(journal) == sorted(runs["journal_before"])
    original = _comparable(read_results(runs["root"] / "first"))
    after = _comparable(read_results(resumed))
    assert not after.duplicated(KEY).any()
    pd.testing.assert_frame_equal(original, after, check_exact=True)


def test_interrupted_run_is_partial_with_exit_code_130(runs):
    code, _, stderr = runs["interrupted"]
    assert code == 130
    assert "--resume" in stderr
    summary = runs["interrupted_summary"]
    assert summary["status"] == "partial" and "interrupted" in summary["error"]
    # utility cells + the 5 extraction cells before copycat seed 1 (seed 0: 4, seed 1: knockoff vs none)
    assert len(runs["interrupted_journal"]) == 2 + 5


def test_resume_after_a_real_interruption(runs):
    code, _, stderr = runs["interrupted_resume"]
    assert code == 0, stderr
    summary = json.loads((runs["root"] / "interrupted" / "summary.json").read_text())
    assert summary["status"] == "complete"
    pd.testing.assert_frame_equal(_comparable(read_results(runs["root"] / "first")),
                                  _comparable(read_results(runs["root"] / "interrupted")), check_exact=True)


def test_open_for_resume_keeps_rows_of_finished_cells(tmp_path):
    store = ResultsStore(tmp_path)
    store.append([{"kind": "utility", "victim": "v", "defence": "none", "attack": "", "budget": "", "seed": "",
                   "metric": "victim_accuracy", "value": 0.9}])
    store.finish_cell(cell_key("utility", "none"))
    for seed in (0, 1):
        store.append([{"kind": "extraction", "victim": "v", "defence": "none", "attack": "copycat", "budget": 10,
                       "seed": seed, "metric": "fidelity", "value": 0.5 + seed / 10}])
    store.finish_cell(cell_key("extraction", "none", "copycat", 0))  # seed 1 never finished
    done = store.open_for_resume()
    assert done == {"utility|none||", "extraction|none|copycat|0"}
    frame = read_results(tmp_path)
    kept = sorted(zip(frame["kind"], pd.to_numeric(frame["seed"], errors="coerce").fillna(-1)))
    assert kept == [("extraction", 0.0), ("utility", -1.0)]


def test_open_for_resume_drops_rows_of_unfinished_cells(tmp_path):
    store = ResultsStore(tmp_path)
    store.append([{"kind": "utility", "victim": "v", "defence": "none", "attack": "", "budget": "", "seed": "",
                   "metric": "victim_accuracy", "value": 0.9},
                  {"kind": "utility", "victim": "v", "defence": "label_only", "attack": "", "budget": "", "seed": "",
                   "metric": "victim_accuracy", "value": 0.9}])
    store.finish_cell(cell_key("utility", "none"))
    with open(store.journal_path, "a") as f:
        f.write('{"cell": "utility|label_on')  # a torn last line from a hard kill
    assert store.open_for_resume() == {"utility|none||"}
    assert list(read_results(tmp_path)["defence"]) == ["none"]


def test_open_for_resume_twice_before_any_cell_finished(tmp_path):
    # The first resume drops every row (no cell finished) and leaves a header-only results.csv;
    # a second interruption and resume must read that back, not fail on it.
    store = ResultsStore(tmp_path)
    store.append([{"kind": "utility", "victim": "v", "defence": "none", "attack": "", "budget": "", "seed": "",
                   "metric": "victim_accuracy", "value": 0.9}])
    assert store.open_for_resume() == set()
    assert store.open_for_resume() == set()
    assert len(read_results(tmp_path)) == 0 and list(read_results(tmp_path).columns) == COLUMNS


def test_open_for_resume_keeps_detection_and_detector_rows(tmp_path):
    store = ResultsStore(tmp_path)
    store.append([{"kind": "detector", "victim": "v", "defence": "msp", "attack": "", "budget": "", "seed": "",
                   "metric": "fit_seconds", "value": 0.1},
                  {"kind": "detection", "victim": "v", "defence": "msp", "attack": "jbda", "budget": 100,
                   "seed": 0, "metric": "auroc", "value": 0.7}])
    store.finish_cell(cell_key("detectors", ""))
    store.finish_cell(cell_key("detection", "", "jbda", 0))
    store.open_for_resume()
    assert sorted(read_results(tmp_path)["kind"]) == ["detection", "detector"]


def test_resume_without_a_run_is_an_input_error(tmp_path, capsys, write_yaml):
    path = write_yaml(tiny_scenario(output={"dir": str(tmp_path / "runs")}))
    code, out = _run(["run", str(path), "--quiet", "--resume", "--out", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "--resume" in out.err


def test_run_refuses_a_non_empty_out_folder(tmp_path, capsys, write_yaml):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    path = write_yaml(tiny_scenario())
    code, out = _run(["run", str(path), "--quiet", "--out", str(tmp_path / "busy")], capsys)
    assert code == 2 and "not empty" in out.err


# ---------------------------------------------------------------- list and report


def test_list_everything(capsys):
    code, out = _run(["list"], capsys)
    assert code == 0
    for kind, reg in registry.REGISTRIES.items():
        assert f"{kind}:" in out.out
        for name in reg.names():
            assert f"  {name} " in out.out, (kind, name)
    assert "quickstart" in out.out  # shipped scenarios


@pytest.mark.parametrize("kind", ["attacks", "defences", "victims", "data", "metrics", "detectors"])
def test_list_one_kind(kind, capsys):
    code, out = _run(["list", kind], capsys)
    assert code == 0
    assert out.out.startswith(f"{kind}:")
    for name in registry.REGISTRIES[kind].names():
        assert f"  {name} " in out.out
    others = {n for k, r in registry.REGISTRIES.items() if k != kind for n in r.names()}
    others -= set(registry.REGISTRIES[kind].names())
    for name in others:
        assert f"\n  {name} " not in out.out, name


def test_list_shows_parameters(capsys):
    code, out = _run(["list", "attacks"], capsys)
    assert "strategy" in out.out and "use_probability" in out.out


def test_list_unknown_kind_is_an_error(capsys):
    assert main(["list", "attackz"]) == 2
    assert "Did you mean 'attacks'?" in capsys.readouterr().err


def test_report_on_a_non_run_folder(tmp_path, capsys):
    code, out = _run(["report", str(tmp_path)], capsys)
    assert code == 2 and "summary.json" in out.err
    assert not (tmp_path / "report.html").exists()
    code, out = _run(["report", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not found" in out.err


def test_report_rebuilds_from_a_run_folder(runs, capsys, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["root"] / "first", run)
    (run / "report.html").unlink()
    code, out = _run(["report", str(run)], capsys)
    assert code == 0 and (run / "report.html").stat().st_size > 0


def test_no_command_prints_help(capsys):
    code, out = _run([], capsys)
    assert code == 2 and "usage" in out.out.lower()
