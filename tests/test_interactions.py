"""The interactions section: the conflict rule, DP-SGD through Opacus, adversarial training through ART,
every pairing the schema accepts runs, and the schema's errors for pairs that cannot be deployed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stealcheck.errors import ScenarioError
from stealcheck.interactions.conflicts import build_matrix, format_matrix, judge_pair, matrix_rows, risk_change
from stealcheck.scenario import build_scenario

TOL = {"phi_acc": 0.01, "robust_accuracy": 0.05, "mi_advantage": 0.05, "epsilon": 0.5, "trigger_accuracy": 0.05,
       "ownership_confidence": 0.01, "copy_fidelity": 0.05}
WM = {"id": "wm", "figures": ["trigger_accuracy"], "symbols": ["phi_WM"]}
DP = {"id": "dp", "figures": ["epsilon", "mi_advantage"], "symbols": ["epsilon", "phi_MI"]}
ADV = {"id": "adv", "figures": ["robust_accuracy"], "symbols": ["phi_ADV"]}


# ---------------------------------------------------------------- the conflict rule on hand-made figures


def test_accuracy_is_judged_against_each_defence_alone():
    # DP alone costs 8 points: deployed with the watermark, the pair is 8.5 points below the watermark alone, a
    # conflict on phi_ACC (the talk's rule: an ownership check that leaves the model as it is conflicts with DP
    # on accuracy when DP costs more than the tolerance).
    alone_wm = {"phi_acc": 0.99, "trigger_accuracy@wm": 1.0}
    alone_dp = {"phi_acc": 0.91, "epsilon": 4.0, "mi_advantage": 0.02}
    pair = {"phi_acc": 0.905, "trigger_accuracy@wm": 0.98, "epsilon": 4.0, "mi_advantage": 0.03}
    out = judge_pair(WM, DP, alone_wm, alone_dp, pair, TOL)
    assert out["status"] == "conflict" and [c["phi"] for c in out["failed"]] == ["phi_ACC"]
    acc = out["failed"][0]
    assert acc["against"] == "wm" and acc["alone"] == 0.99 and acc["drop"] == pytest.approx(0.085)
    # both alone within a point of each other, the pair 1 point below the better: the boundary, no conflict
    close = {**alone_dp, "phi_acc": 0.985}
    out = judge_pair(WM, DP, alone_wm, close, {**pair, "phi_acc": 0.98}, TOL)
    assert out["status"] == "ok"
    acc = next(c for c in out["checked"] if c["phi"] == "phi_ACC")
    assert acc["against"] == "wm" and acc["drop"] == pytest.approx(0.01)
    # 1.5 points below the better one alone: a conflict on phi_ACC only
    out = judge_pair(WM, DP, alone_wm, close, {**pair, "phi_acc": 0.975}, TOL)
    assert out["status"] == "conflict" and [c["phi"] for c in out["failed"]] == ["phi_ACC"]
    # accuracy_reference "costlier": only what the pair costs beyond DP's own 8 points (0.5 here: no conflict)
    out = judge_pair(WM, DP, alone_wm, alone_dp, pair, TOL, "costlier")
    assert out["status"] == "ok"
    acc = next(c for c in out["checked"] if c["phi"] == "phi_ACC")
    assert acc["against"] == "dp" and acc["drop"] == pytest.approx(0.005)
    out = judge_pair(WM, DP, alone_wm, alone_dp, {**pair, "phi_acc": 0.895}, TOL, "costlier")
    assert [c["phi"] for c in out["failed"]] == ["phi_ACC"]


def test_each_defence_is_judged_on_its_own_figures_in_their_bad_direction():
    alone_wm = {"phi_acc": 0.99, "trigger_accuracy@wm": 1.0}
    alone_dp = {"phi_acc": 0.985, "epsilon": 4.0, "mi_advantage": 0.02}
    # The watermark falls to 30% (phi_WM), and the MI advantage rises by 10 points (worse for DP).
    pair = {"phi_acc": 0.985, "trigger_accuracy@wm": 0.30, "epsilon": 4.0, "mi_advantage": 0.12}
    out = judge_pair(WM, DP, alone_wm, alone_dp, pair, TOL)
    failed = {c["phi"]: c for c in out["failed"]}
    assert set(failed) == {"phi_WM", "phi_MI"}
    assert failed["phi_WM"]["drop"] == pytest.approx(0.70) and failed["phi_WM"]["against"] == "wm"
    assert failed["phi_MI"]["drop"] == pytest.approx(0.10)
    # A lower MI advantage is better, not a drop: no conflict on it.
    out = judge_pair(WM, DP, alone_wm, alone_dp, {**pair, "trigger_accuracy@wm": 1.0, "mi_advantage": -0.2}, TOL)
    assert out["status"] == "ok"


def test_tolerances_are_settings_and_the_boundary_is_not_a_conflict():
    alone_a = {"phi_acc": 0.90, "robust_accuracy": 0.60}
    alone_w = {"phi_acc": 0.90, "trigger_accuracy@wm": 1.0}
    pair = {"phi_acc": 0.89, "robust_accuracy": 0.50, "trigger_accuracy@wm": 1.0}
    out = judge_pair(ADV, WM, alone_a, alone_w, pair, TOL)
    assert out["status"] == "conflict" and [c["phi"] for c in out["failed"]] == ["phi_ADV"]  # 1 point is allowed
    assert judge_pair(ADV, WM, alone_a, alone_w, pair, {**TOL, "robust_accuracy": 0.2})["status"] == "ok"
    assert judge_pair(ADV, WM, alone_a, alone_w, pair, {**TOL, "phi_acc": 0.0,
                                                        "robust_accuracy": 0.2})["status"] == "conflict"


def test_an_unmeasured_figure_leaves_the_pair_undecided_not_ok():
    out = judge_pair(ADV, WM, {"phi_acc": 0.9, "robust_accuracy": float("nan")}, {"phi_acc": 0.9},
                     {"phi_acc": 0.9, "robust_accuracy": 0.5}, TOL)
    assert out["status"] == "undecided" and "phi_ADV" in out["undecided"] and "phi_WM" in out["undecided"]


def test_risk_columns_compare_with_no_defence():
    assert risk_change("membership_inference", 0.05, 0.15, 0.05)["effect"] == "increases"
    assert risk_change("membership_inference", 0.05, 0.08, 0.05)["effect"] == "unchanged"
    assert risk_change("evasion", 0.40, 0.80, 0.05)["effect"] == "decreases"  # robust accuracy up = less evasion
    assert risk_change("extraction", 0.90, 0.70, 0.05)["effect"] == "decreases"


def test_matrix_layout_json_and_gate_rows():
    figures = {"none": {"phi_acc": 0.99, "mi_advantage": 0.02},
               "wm": {"phi_acc": 0.99, "trigger_accuracy@wm": 1.0, "mi_advantage": 0.03},
               "dp": {"phi_acc": 0.95, "epsilon": 4.0, "mi_advantage": 0.0},
               "wm+dp": {"phi_acc": 0.93, "trigger_accuracy@wm": 0.2, "epsilon": 4.0, "mi_advantage": 0.0}}
    m = build_matrix([WM, DP], figures, TOL, ["membership_inference"], [("wm", "dp")], {})
    assert m["conflicts"] == ["wm+dp"] and m["accuracy_reference"] == "better"
    costlier = build_matrix([WM, DP], figures, TOL, ["membership_inference"], [("wm", "dp")], {}, "costlier")
    assert [c["phi"] for c in costlier["pairs"]["wm+dp"]["failed"]] == ["phi_ACC", "phi_WM"]  # 2 points below DP
    text = format_matrix(m)
    assert "| wm | X | phi_ACC -6.0, phi_WM -80.0 |" in text  # against the watermark alone (0.99)
    json.dumps(m)  # the matrix is JSON as it is
    rows = matrix_rows(m, "v")
    overall = [r for r in rows if r["metric"] == "conflict"]
    assert overall == [{"kind": "interaction", "victim": "v", "defence": "wm+dp", "attack": "", "budget": "",
                        "seed": "", "metric": "conflict", "value": 1.0, "scheme": ""}]
    drops = {r["scheme"]: r["value"] for r in rows if r["metric"] == "phi_drop"}
    assert drops["phi_WM:wm"] == pytest.approx(0.8) and drops["phi_ACC"] == pytest.approx(0.06)


# ---------------------------------------------------------------- training-time defences on a tiny model


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    return x[:1200], d.target[:1200], x[1200:1400], d.target[1200:1400]


def _train(**kw):
    import torch

    from stealcheck.adapters.networks import build_network
    from stealcheck.interactions.training import train_variant

    xtr, ytr, _, _ = _digits()
    torch.manual_seed(0)
    net = build_network("mlp", (1, 8, 8), 10, {"hidden": [64]})
    info = train_variant(net, xtr, ytr, nb_classes=10, input_shape=(1, 8, 8), clip_values=(0.0, 1.0),
                         steps=kw.pop("steps", 200), batch_size=64, lr=3e-3, seed=0, **kw)
    return net, info


def test_opacus_reports_a_finite_epsilon_and_respects_the_target():
    from stealcheck.interactions.specs import DPSGDParams

    _, fixed = _train(steps=40, dp=DPSGDParams(noise_multiplier=1.0))
    assert math.isfinite(fixed["epsilon"]) and fixed["epsilon"] > 0 and fixed["noise_multiplier"] == 1.0
    _, target = _train(steps=40, dp=DPSGDParams(target_epsilon=1.0))
    assert 0.9 <= target["epsilon"] <= 1.0  # Opacus picks the noise for the target (tolerance 0.01)
    assert target["noise_multiplier"] > fixed["noise_multiplier"]  # a smaller epsilon needs more noise
    # More noise for the same steps: a smaller epsilon, reported by the accountant.
    _, noisier = _train(steps=40, dp=DPSGDParams(noise_multiplier=2.0))
    assert noisier["epsilon"] < fixed["epsilon"]


def test_adversarial_training_raises_pgd_robust_accuracy():
    import torch
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from stealcheck.interactions.specs import AdversarialTrainingParams

    _, _, xte, yte = _digits()

    def robust(net):
        c = PyTorchClassifier(net, torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                              clip_values=(0.0, 1.0))
        x_adv = ProjectedGradientDescent(c, eps=0.1, eps_step=0.02, max_iter=10, verbose=False).generate(xte)
        return float(np.mean(c.predict(x_adv).argmax(1) == yte))

    plain, _ = _train()
    adv, _ = _train(adversarial=AdversarialTrainingParams(eps=0.1, ratio=1.0, max_iter=5))
    assert robust(adv) > robust(plain) + 0.1  # measured: 0.79 against 0.55


# ---------------------------------------------------------------- the section end to end (tiny)

MEMBERS = [
    {"plugin": "dp_sgd", "id": "dp", "params": {"noise_multiplier": 1.0}},
    {"plugin": "adversarial_training", "id": "adv", "params": {"eps": 0.1, "max_iter": 2}},
    {"plugin": "backdoor", "id": "wm", "params": {"trigger": "noise", "size": 20}},
    {"plugin": "rounded", "id": "rounded", "params": {"decimals": 1}},
    "label_only",
    {"plugin": "reject", "id": "reject", "params": {"detector": "fusion"}},
    {"plugin": "dawn", "id": "dawn", "params": {"rate": 0.05}},
    {"plugin": "dataset_inference", "id": "di", "params": {"samples": 10, "train_samples": 20, "directions": 2,
                                                            "max_steps": 5}},
    {"plugin": "fingerprint", "id": "fp", "params": {"size": 10, "surrogates": 1, "references": 1,
                                                     "calibration_references": 1, "steps": 3, "model_steps": 20}},
]


def interactions_scenario(scenario_dict, **section):
    return scenario_dict(
        victim={"kind": "torch", "architecture": "mlp", "arch_params": {"hidden": [32]}, "input": {"shape": [1, 8, 8]},
                "train": {"steps": 60, "batch_size": 32}},
        thief={"architecture": "mlp", "arch_params": {"hidden": [16]}, "epochs": 2, "min_steps": 20, "max_steps": 30},
        defences=["none"], attacks=[{"knockoff": {"strategy": "random"}}], budgets=[200], seeds=[0],
        detectors=["fusion"], detection={"budgets": [100]},
        evaluation={"uniform_samples": 0},
        interactions={"defences": MEMBERS, "membership": {"samples": 60}, "robustness": {"samples": 30, "max_iter": 3},
                      **section})


def test_every_pairing_the_schema_accepts_runs(scenario_dict, write_yaml, tmp_path):
    from stealcheck.cli import main
    from stealcheck.plan import interaction_deployments

    data = interactions_scenario(scenario_dict)
    data["expect"] = [{"metric": "conflict", "defence": "dp+wm", "min": 0, "max": 1},
                      {"metric": "phi_acc", "defence": "none", "min": 0.3}]
    path = write_yaml(data)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = tmp_path / "run"
    matrix = json.loads((run / "interactions.json").read_text())
    scenario = build_scenario(data)
    deployments = ["none" if not d else "+".join(m.id for m in d) for d in interaction_deployments(scenario)]
    assert len(deployments) == 1 + 9 + 34  # 36 pairs minus rounded+label_only and di+fp
    assert set(matrix["figures"]) == set(deployments)  # every deployment was measured
    for did in deployments:
        f = matrix["figures"][did]
        for key in ("phi_acc", "robust_accuracy", "mi_advantage", "copy_fidelity"):
            assert math.isfinite(f[key]), (did, key)
    assert all(math.isfinite(matrix["figures"][d]["epsilon"]) for d in deployments if "dp" in d.split("+"))
    assert "trigger_accuracy@wm" in matrix["figures"]["wm+dawn"]
    assert {"ownership_confidence@dawn", "ownership_confidence@di"} <= set(matrix["figures"]["dawn+di"])
    assert 0 <= matrix["figures"]["reject+dawn"]["auroc@reject"] <= 1  # the detector fitted on the variant
    statuses = {p: c["status"] for p, c in matrix["pairs"].items()}
    assert statuses["rounded+label_only"] == statuses["di+fp"] == "cannot combine"
    assert all(s in ("ok", "conflict") for p, s in statuses.items() if p not in ("rounded+label_only", "di+fp"))
    summary = json.loads((run / "summary.json").read_text())
    assert [len(g["observed"]) for g in summary["gates"]] == [1, 1] and all(g["passed"] for g in summary["gates"])
    assert set(summary["interaction_models"]) == {"none", "dp", "adv", "wm", "dp+adv", "dp+wm", "adv+wm"}
    import pandas as pd

    frame = pd.read_csv(run / "results.csv")
    assert set(frame.loc[frame["kind"] == "interaction", "defence"]) == set(deployments)
    html = (run / "report.html").read_text()
    assert 'id="interactions"' in html and "n/a (cannot combine)" in html  # the matrix, in the report


# ---------------------------------------------------------------- schema errors


@pytest.mark.parametrize("section, path, words", [
    ({"pairs": [["rounded", "label_only"]]}, "interactions.pairs.0", ["rewrite the API's answers", "chain"]),
    ({"pairs": [["di", "fp"]]}, "interactions.pairs.0", ["only observe"]),
    ({"pairs": [["dp", "nope"]]}, "interactions.pairs.0.1", ["no member 'nope'"]),
    ({"pairs": [["dp", "dp"]]}, "interactions.pairs.0", ["two different members"]),
    ({"pairs": [["dp", "wm"], ["wm", "dp"]]}, "interactions.pairs.1", ["listed twice"]),
    ({"defences": MEMBERS + [{"plugin": "backdoor", "id": "wm2"}], "pairs": [["wm", "wm2"]]}, "interactions.pairs.0",
     ["both embed a watermark"]),
    ({"defences": MEMBERS + [{"plugin": "dp_sgd", "id": "dp2"}], "pairs": [["dp", "dp2"]]}, "interactions.pairs.0",
     ["two configurations"]),
    ({"defences": ["dp_sgd", "none"]}, "interactions.defences.1", ["always measured"]),
    ({"defences": ["dp_sgd", {"reject": {"detector": "x"}}]}, "interactions.defences.1", ["'x'", "does not declare"]),
    ({"defences": MEMBERS + [{"plugin": "pow", "id": "pow", "params": {"detector": "fusion"}}],
      "pairs": [["reject", "pow"]]}, "interactions.pairs.0", ["one active defence at a time"]),
    ({"defences": ["dp_sgdd"]}, "interactions.defences.0", ["unknown defence", "dp_sgd"]),
    ({"defences": [{"dp_sgd": {"noise_multiplier": None}}]}, "interactions.defences.0", ["target_epsilon"]),
    ({"extraction": {"budget": 300}}, "interactions.extraction.budget", ["not a checkpoint"]),
    ({"public": "nope"}, "interactions.public", ["'nope'"]),
    ({"accuracy_reference": "best"}, "interactions.accuracy_reference", ["better", "costlier"]),
    ({"public": "victim_train"}, "interactions.public", ["both name 'victim_train'", "different data sets"]),
    ({"tolerances": {"phi_ac": 0.01}}, "interactions.tolerances", ["phi_ac"]),
])
def test_schema_errors(scenario_dict, section, path, words):
    with pytest.raises(ScenarioError) as err:
        build_scenario(interactions_scenario(scenario_dict, **section))
    if path is not None:
        assert err.value.path.startswith(path), err.value.path
    for w in words:
        assert w in err.value.message, err.value.message


def test_pairs_that_cannot_combine_are_skipped_with_the_reason_when_all_pairs_are_asked(scenario_dict):
    from stealcheck.scenario import interaction_pairs

    s = build_scenario(interactions_scenario(scenario_dict))
    pairs, skipped = interaction_pairs(s.model.interactions, s.interactions)
    assert set(skipped) == {"rounded+label_only", "di+fp"} and "chain" in skipped["rounded+label_only"]
    assert ("dp", "wm") in pairs and ("rounded", "dawn") in pairs


def test_validate_rejects_what_run_would(scenario_dict, write_yaml, capsys):
    from stealcheck.cli import main

    path = write_yaml(interactions_scenario(scenario_dict, pairs=[["rounded", "label_only"]]))
    assert main(["validate", str(path)]) == 2
    assert "chain" in capsys.readouterr().err
