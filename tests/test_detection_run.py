"""The detection track end to end: detectors fitted on the defender's data, scored on the queries
attacks really sent, active defences driven by a detector, gates on detection metrics."""

import json

import numpy as np
import pandas as pd
import pytest

from stealcheck.errors import ScenarioError
from stealcheck.runner import run_scenario
from stealcheck.scenario import build_scenario

from conftest import tiny_scenario


def detection_scenario(**overrides):
    base = tiny_scenario(
        name="tiny-detection",
        data={"victim_train": {"source": "digits", "split": "train"},
              "test": {"source": "digits", "split": "test"},
              "attacker": {"source": "digits", "split": "all"},
              "seeds": {"source": "digits", "split": "train", "limit": 20}},
        defences=["none", {"plugin": "reject", "id": "reject", "params": {"detector": "msp", "target_fpr": 0.1}}],
        attacks=[{"plugin": "knockoff", "id": "knockoff", "params": {"strategy": "random"}},
                 {"plugin": "jbda", "id": "jbda", "params": {"seed_data": "seeds", "step_size": 0.3, "seed_size": 20},
                  "budgets": [40, 80]},
                 {"plugin": "dfme", "id": "dfme", "params": {"batch_size": 16, "generator_width": 8},
                  "budgets": [200, 400]}],
        budgets=[50, 100],
        seeds=[0],
        detectors=["msp", "energy", "prada"],
        detection={"budgets": [80], "ratio_sweep": [0.1, 0.9], "prada_clients": [1, 4]},
    )
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    import os

    os.environ["STEALCHECK_CACHE_DIR"] = str(tmp_path_factory.mktemp("det-cache"))
    out = tmp_path_factory.mktemp("det-run")
    scenario = build_scenario(detection_scenario())
    outcome = run_scenario(scenario, out_dir=out / "run", quiet=True)
    return outcome, pd.read_csv(out / "run" / "results.csv"), out / "run"


def test_detection_rows_for_every_detector_and_attack(detection_run):
    outcome, frame, run_dir = detection_run
    assert outcome.status == "complete"
    det = frame[frame["kind"] == "detection"]
    for detector in ("msp", "energy"):
        for attack in ("knockoff", "jbda", "dfme"):
            cell = det[(det["defence"] == detector) & (det["attack"] == attack)]
            metrics = set(cell["metric"])
            assert {"auroc", "aupr", "fpr_at_95_tpr", "fpr_at_90_tpr", "tpr_at_1_fpr",
                    "auroc@0.1", "aupr@0.9"} <= metrics, (detector, attack, metrics)
            assert (run_dir / "detection" / f"{detector}__{attack}__80.npz").exists()
    prada = det[det["defence"] == "prada"]
    assert {"benign_flagged", "clients_flagged", "clients_flagged@4_clients"} <= set(prada["metric"])


def test_rows_agree_with_the_saved_scores(detection_run):
    # The report draws ROC curves from the saved scores: they must be the ones the rows came from.
    from stealcheck.detection import auroc, mix_at_ratio

    _, frame, run_dir = detection_run
    det = frame[(frame["kind"] == "detection") & (frame["metric"] == "auroc")]
    for (detector, attack), value in det.set_index(["defence", "attack"])["value"].items():
        if detector == "prada":
            continue
        with np.load(run_dir / "detection" / f"{detector}__{attack}__80.npz") as z:
            b, a = z["benign"], z["attack"]
        assert len(a) == 80
        m = mix_at_ratio(len(b), len(a), 0.5, seed=0)
        assert auroc(b[m.benign], a[m.attack]) == pytest.approx(value)


def test_knockoff_from_the_benign_distribution_is_undetectable(detection_run):
    # Knockoff's queries here are digits from the same source as the benign ones: no score can
    # tell them apart (AUROC near 0.5) — the honest baseline of the comparison table.
    _, frame, _ = detection_run
    det = frame[(frame["kind"] == "detection") & (frame["metric"] == "auroc") & (frame["attack"] == "knockoff")]
    assert ((det["value"] > 0.3) & (det["value"] < 0.7)).all()


def test_detector_cost_rows(detection_run):
    _, frame, _ = detection_run
    cost = frame[frame["kind"] == "detector"]
    msp = cost[cost["defence"] == "msp"].set_index("metric")["value"]
    assert {"fit_seconds", "score_ms_per_query", "victim_ms_per_query", "score_cost_ratio",
            "served_accuracy"} <= set(msp.index)
    assert msp["served_accuracy"] > 0.8  # the plain victim answers under msp


def test_active_defence_service_metrics(detection_run):
    _, frame, _ = detection_run
    util = frame[(frame["kind"] == "utility")]
    none = util[util["defence"] == "none"].set_index("metric")["value"]
    reject = util[util["defence"] == "reject"].set_index("metric")["value"]
    assert none["answered_share"] == 1.0
    # The threshold is set for 10% false positives on benign calibration data: honest users keep ~90%.
    assert 0.75 <= reject["answered_share"] <= 0.97
    attack = frame[(frame["kind"] == "extraction") & (frame["defence"] == "reject")
                   & (frame["metric"] == "answered_share")]
    assert ((attack["value"] >= 0) & (attack["value"] <= 1)).all() and len(attack) == 6
    assert (frame[frame["metric"] == "latency_p95_ms"]["value"] > 0).all()


def test_summary_and_report_mention_detection(detection_run):
    _, _, run_dir = detection_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["detectors"]) == {"msp", "energy", "prada"}
    assert summary["detection"]["calibration_samples"] > 0


def test_detection_gate(tmp_path):
    scenario = build_scenario(detection_scenario(
        defences=["none"], attacks=[{"plugin": "knockoff", "id": "knockoff", "params": {"strategy": "random"}}],
        detectors=["msp"], detection={"budgets": [100]},
        expect=[{"metric": "auroc", "detector": "msp", "attack": "knockoff", "min": 0.3, "max": 0.7},
                {"metric": "auroc", "detector": "msp", "attack": "knockoff", "min": 0.9, "name": "too strict"}]))
    outcome = run_scenario(scenario, out_dir=tmp_path / "run", quiet=True)
    passed = {g.name: g.passed for g in outcome.gates}
    assert passed["too strict"] is False
    assert [v for k, v in passed.items() if k != "too strict"] == [True]

    # Resuming a finished run keeps its detection and detector rows (and so the gates' verdicts):
    # their cells are journaled under keys that differ from the rows' defence column.
    before = pd.read_csv(tmp_path / "run" / "results.csv")
    again = run_scenario(scenario, out_dir=tmp_path / "run", resume=True, quiet=True)
    after = pd.read_csv(tmp_path / "run" / "results.csv")
    assert {"detection", "detector"} <= set(after["kind"])
    pd.testing.assert_frame_equal(before.sort_values(list(before.columns)).reset_index(drop=True),
                                  after.sort_values(list(after.columns)).reset_index(drop=True))
    assert {g.name: g.passed for g in again.gates} == passed


@pytest.mark.parametrize("change, message", [
    ({"defences": [{"reject": {"detector": "same"}}]}, "does not declare"),
    ({"attacks": [{"knockoff": {"avoid_detector": "prada"}}]}, "flags clients"),
    ({"detectors": ["oe"]}, "data.outliers is required"),
    ({"detection": {"attacks": ["knockof"]}}, "Did you mean 'knockoff'"),
    ({"detection": {"benign": "nope"}}, "nope"),
    ({"detection": {"budgets": [0]}}, "positive"),
    ({"expect": [{"metric": "auroc", "detector": "msp", "budget": 7, "min": 0.5}]}, "detection budget"),
])
def test_bad_detection_config(change, message):
    with pytest.raises(ScenarioError, match=message):
        build_scenario(detection_scenario(**change))


def test_an_active_defence_may_be_driven_by_a_per_client_detector():
    # PRADA flags clients: reject / pow / misinformation act on a client's queries from its flag on
    # (stealcheck serve keeps one history per API key).
    scenario = build_scenario(detection_scenario(defences=[{"reject": {"detector": "prada"}}]))
    assert scenario.defences[0].params.detector == "prada"


def test_cost_ratio_times_victim_and_detector_alternately():
    # a load change during the run must reach both sides of the ratio, so the two are timed in turns
    from stealcheck.detection_track import cost_ratio

    calls: list[str] = []
    x = np.zeros((8, 1, 4, 4), dtype=np.float32)
    score_s, victim_s = cost_ratio(lambda b: calls.append("score"), lambda b: calls.append("victim"), x, repeats=3)
    assert calls == ["victim", "score", "score", "victim", "victim", "score"]
    assert score_s > 0 and victim_s > 0
