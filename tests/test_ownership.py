"""Ownership resolution: each scheme on a tiny victim, DAWN's keyed selection, exact p-values, the schema's
errors, the plan's cells and a whole run with rows of kind ownership."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import tiny_scenario

from stealcheck.errors import ScenarioError
from stealcheck.scenario import build_scenario

# ---------------------------------------------------------------- exact p-values against hand-computed ones


def test_binomial_p_value_matches_the_sum_by_hand():
    from stealcheck.ownership.base import binomial_p_value, smallest_significant

    # P(X >= 3), X ~ Bin(5, 0.1) = C(5,3) .1^3 .9^2 + C(5,4) .1^4 .9 + .1^5
    hand = 10 * 0.1**3 * 0.9**2 + 5 * 0.1**4 * 0.9 + 0.1**5
    assert binomial_p_value(3, 5, 0.1) == pytest.approx(hand, rel=1e-12)
    assert hand == pytest.approx(0.00856, abs=1e-12)
    assert binomial_p_value(0, 5, 0.1) == pytest.approx(1.0)
    assert binomial_p_value(7, 7, 1 / 9) == pytest.approx((1 / 9) ** 7, rel=1e-12)
    # the threshold: the fewest matches of 20 that are significant at 1% against chance 0.1
    k = smallest_significant(20, 0.1, 0.01)
    assert binomial_p_value(k, 20, 0.1) < 0.01 <= binomial_p_value(k - 1, 20, 0.1)


def test_welch_p_value_matches_the_formula_by_hand():
    from scipy.stats import t as student_t

    from stealcheck.ownership.base import welch_p_value

    a = np.array([2.1, 2.5, 3.0, 2.8, 2.2, 2.9])
    b = np.array([1.9, 2.0, 2.3, 1.7, 2.1, 1.8, 2.2, 1.6])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t_hand = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    t, p = welch_p_value(a, b)
    assert t == pytest.approx(t_hand, rel=1e-12)
    assert p == pytest.approx(student_t.sf(t_hand, df), rel=1e-9)
    assert welch_p_value(b, a)[1] == pytest.approx(1 - p, rel=1e-9)  # one-sided: the other way is not significant
    assert welch_p_value(np.ones(4), np.ones(4)) == (0.0, 1.0)


# ---------------------------------------------------------------- DAWN's keyed selection


def test_dawn_selection_is_deterministic_keyed_per_client_and_hits_the_rate():
    from stealcheck.ownership.dawn import DawnLayer

    layer = DawnLayer(b"secret", rate=0.05, nb_classes=10)
    x = np.random.default_rng(0).uniform(0, 1, (20000, 1, 8, 8)).astype(np.float32)
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=len(x))
    picked, _ = layer.selection(x, "alice")
    sd = math.sqrt(0.05 * 0.95 / len(x))
    assert abs(picked.mean() - 0.05) < 4 * sd  # the rate r, within 4 standard errors
    # the same query always gets the same answer (in another batch, in another order)
    first = layer.respond(x[:500], probs[:500], "alice").probs
    again = layer.respond(x[:500][::-1], probs[:500][::-1], "alice").probs[::-1]
    np.testing.assert_array_equal(first, again)
    # a changed answer moves the top class elsewhere; an unpicked one is untouched
    changed = picked[:500]
    assert (first[changed].argmax(1) != probs[:500][changed].argmax(1)).all()
    np.testing.assert_array_equal(first[~changed], probs[:500][~changed])
    # another client has another key: another selection
    other, _ = layer.selection(x, "bob")
    assert (other != picked).mean() > 0.05
    # the client's watermark records the query index and changed label of each changed answer
    fresh = DawnLayer(b"secret", rate=0.05, nb_classes=10)
    fresh.respond(x[:300], probs[:300], "alice")
    fresh.respond(x[300:600], probs[300:600], "alice")
    mark = fresh.watermark("alice")
    np.testing.assert_array_equal(mark["index"], np.flatnonzero(picked[:600]))
    np.testing.assert_array_equal(mark["label"], fresh.change(x[:600], probs[:600], "alice")[2][picked[:600]])


def test_dawn_changed_labels_are_uniform_over_the_other_classes():
    from scipy.stats import chisquare

    from stealcheck.ownership.dawn import DawnLayer

    layer = DawnLayer(b"k", rate=0.5, nb_classes=5)
    x = np.random.default_rng(2).uniform(0, 1, (8000, 4)).astype(np.float32)
    probs = np.tile([0.6, 0.1, 0.1, 0.1, 0.1], (len(x), 1))
    _, picked, target = layer.change(x, probs, "c")
    counts = np.bincount(target[picked], minlength=5)
    assert counts[0] == 0  # never the victim's class
    assert chisquare(counts[1:]).pvalue > 1e-3


# ---------------------------------------------------------------- each scheme on a tiny victim


def _train_mlp(x, y_soft, seed, steps=600):
    import torch

    from stealcheck.adapters.networks import build_network, fit_network

    torch.manual_seed(seed)
    net = build_network("mlp", (1, 8, 8), 10, {})
    fit_network(net, x, y_soft, steps=steps, batch_size=64, lr=0.003, seed=seed)
    net.eval()
    return net


@pytest.fixture(scope="module")
def tiny_world():
    """A digits MLP trained hard on 80 samples (it overfits, as a victim with private data does), an
    independent MLP trained on 80 other digits, and the defender's context."""
    import torch.nn as nn
    from art.estimators.classification import PyTorchClassifier

    from stealcheck.adapters.data import DigitsParams, digits
    from stealcheck.adapters.networks import one_hot
    from stealcheck.adapters.torch_victim import _WithSoftmax
    from stealcheck.datasets import DataContext
    from stealcheck.ownership.base import OwnershipContext
    from stealcheck.victim import Victim

    data = digits(DigitsParams(split="all"), DataContext((1, 8, 8), (0.0, 1.0), seed=0))
    order = np.random.default_rng(0).permutation(len(data))
    private, public, other = data.subset(order[:80]), data.subset(order[300:900]), data.subset(order[900:980])

    def victim_of(net, name):
        clf = PyTorchClassifier(model=_WithSoftmax(net), loss=nn.NLLLoss(), input_shape=(1, 8, 8), nb_classes=10,
                                clip_values=(0.0, 1.0), device_type="cpu")
        return Victim(clf, 10, (1, 8, 8), (0.0, 1.0), name, "mlp", network=net)

    victim = victim_of(_train_mlp(private.x, one_hot(private.y, 10), seed=1, steps=1500), "tiny victim")
    independent = _train_mlp(other.x, one_hot(other.y, 10), seed=2, steps=1500)

    def ctx_for(v):
        return OwnershipContext(victim=v, private=private, public=public, nb_classes=10, input_shape=(1, 8, 8),
                                clip_values=(0.0, 1.0), seed=0, alpha=0.01,
                                train_model=lambda x, y, seed, steps=None, **kw: _train_mlp(x, y, seed, steps or 600))

    return {"victim": victim, "independent": independent, "ctx_for": ctx_for, "victim_of": victim_of,
            "private": private, "public": public}


def _suspect(net_or_fn, name="s"):
    from stealcheck.ownership.base import Suspect
    from stealcheck.ownership.cells import predict_fn

    fn = net_or_fn if callable(net_or_fn) and not hasattr(net_or_fn, "parameters") else predict_fn(net_or_fn)
    return Suspect(name, fn, (1, 8, 8), 10, (0.0, 1.0))


def test_backdoor_verifies_the_watermarked_victim_not_an_independent_model(tiny_world):
    import copy

    from stealcheck.ownership.backdoor import BackdoorWatermark
    from stealcheck.ownership.deploy import finetune_with
    from stealcheck.ownership.specs import BackdoorParams

    scheme = BackdoorWatermark(BackdoorParams(trigger="noise", size=50, finetune_steps=500))
    ctx = tiny_world["ctx_for"](tiny_world["victim"])
    net = copy.deepcopy(tiny_world["victim"].network)
    finetune_with(net, ctx.private.x, ctx.private.y, scheme.training_embedding(ctx), 10, 64, seed=0)
    evidence = scheme.prepare(ctx)
    marked = scheme.verify(_suspect(net), evidence, ctx)
    assert marked.p_value < 0.01 and marked.statistic > 0.5 and marked.queries == 50
    independent = scheme.verify(_suspect(tiny_world["independent"]), evidence, ctx)
    assert independent.p_value > 0.01
    # the unmarked victim is no copy of its own watermark either
    assert scheme.verify(_suspect(tiny_world["victim"].network), evidence, ctx).p_value > 0.01


def test_dawn_verifies_the_served_victim_not_an_independent_model(tiny_world):
    from stealcheck.ownership.base import Evidence
    from stealcheck.ownership.dawn import Dawn
    from stealcheck.ownership.specs import DawnParams

    scheme = Dawn(DawnParams(rate=0.05))
    v = tiny_world["victim"]
    ctx = tiny_world["ctx_for"](v)
    layer = scheme.oracle_layer(10, 0)
    x = tiny_world["public"].x
    layer.respond(x, v.predict_proba(x), "client")  # the client's queries: its answers carry the marks
    mark = layer.watermark("client")
    evidence = Evidence({"x": mark["x"], "label": mark["label"]})
    assert len(mark["label"]) > 10
    served = _suspect(lambda q: layer.change(q, v.predict_proba(q), "client")[0], "served victim")
    verdict = scheme.verify(served, evidence, ctx)
    assert verdict.statistic == 1.0 and verdict.p_value < 0.01
    assert scheme.verify(_suspect(tiny_world["independent"]), evidence, ctx).p_value > 0.01
    # the raw victim (another API without DAWN) never agrees with the changed answers
    assert scheme.verify(_suspect(v.network), evidence, ctx).statistic == 0.0


def test_fingerprint_verifies_the_victim_not_an_independent_model(tiny_world):
    from stealcheck.ownership.fingerprint import ConferrableFingerprint
    from stealcheck.ownership.specs import FingerprintParams

    scheme = ConferrableFingerprint(FingerprintParams(size=40, candidates=2, eps=0.3, steps=15, step_size=0.05,
                                                      model_steps=400))
    ctx = tiny_world["ctx_for"](tiny_world["victim"])
    evidence = scheme.prepare(ctx)
    assert len(evidence.arrays["x"]) == 40 and 0.1 <= evidence.values["chance"] < 1
    assert np.abs(evidence.arrays["x"] - np.clip(evidence.arrays["x"], 0, 1)).max() == 0  # within the input range
    victim = scheme.verify(_suspect(tiny_world["victim"].network), evidence, ctx)
    assert victim.statistic == 1.0 and victim.p_value < 0.01
    assert scheme.verify(_suspect(tiny_world["independent"]), evidence, ctx).p_value > 0.01


def test_dataset_inference_verifies_the_victim_not_an_independent_model(tiny_world):
    from stealcheck.ownership.dataset_inference import DatasetInference
    from stealcheck.ownership.specs import DatasetInferenceParams

    scheme = DatasetInference(DatasetInferenceParams(samples=40, train_samples=150, directions=8, max_steps=30,
                                                     step_size=0.05))
    ctx = tiny_world["ctx_for"](tiny_world["victim"])
    evidence = scheme.prepare(ctx)
    victim = scheme.verify(_suspect(tiny_world["victim"].network), evidence, ctx)
    assert victim.p_value < 0.01 and victim.statistic > 0
    assert victim.queries > 0
    assert scheme.verify(_suspect(tiny_world["independent"]), evidence, ctx).p_value > 0.01


def test_evidence_commitment_binds_the_evidence():
    from stealcheck.ownership.base import Evidence

    a = Evidence({"x": np.zeros((2, 3), np.float32), "y": np.array([1, 2])}, {"chance": 0.1})
    same = Evidence({"y": np.array([1, 2]), "x": np.zeros((2, 3), np.float32)}, {"chance": 0.1})
    other = Evidence({"x": np.zeros((2, 3), np.float32), "y": np.array([1, 3])}, {"chance": 0.1})
    assert a.commitment == same.commitment != other.commitment and len(a.commitment) == 64


# ---------------------------------------------------------------- schema


def _own(**ownership):
    return tiny_scenario(ownership={"schemes": ["backdoor"], **ownership})


def test_ownership_section_resolves_with_defaults():
    sc = build_scenario(_own(schemes=["backdoor", {"dawn": {"rate": 0.01}}, "fingerprint", "dataset_inference"]))
    assert [r.id for r in sc.ownership] == ["backdoor", "dawn:rate=0.01", "fingerprint", "dataset_inference"]
    assert sc.model.ownership.alpha == 0.01
    assert sc.model.ownership.independent == ["other_seed", "other_arch", "proxy"]
    assert sc.resolved_dict()["ownership"]["schemes"][1]["params"]["rate"] == 0.01
    assert "ownership" not in build_scenario(tiny_scenario()).resolved_dict()


@pytest.mark.parametrize("change,path,message", [
    (dict(schemes=["watermark"]), "ownership.schemes.0", "Unknown ownership scheme 'watermark'"),
    (dict(schemes=["dawn", {"dawn": {"rate": 0.1}}]), "ownership.schemes.1", "both embed a mark in the oracle"),
    (dict(schemes=[]), "ownership.schemes", "at least one scheme"),
    (dict(alpha=1.5), "ownership.alpha", "less than 1"),
    (dict(public="nowhere"), "ownership.public", "'nowhere', which data does not define"),
    (dict(independent=["other_seed", "other_seed"]), "ownership.independent", "must be distinct"),
    (dict(independent=["clone"]), "ownership.independent.0", "other_seed"),
    (dict(budgets=[77]), "ownership.budgets.0", "budget 77 is not a checkpoint"),
    (dict(schemes=[{"backdoor": {"size": 3}}]), "ownership.schemes.0.size", "greater than or equal to 10"),
])
def test_ownership_schema_errors(change, path, message):
    with pytest.raises(ScenarioError) as exc:
        build_scenario(_own(**change))
    assert exc.value.path == path and message in exc.value.message, (exc.value.path, exc.value.message)


def test_dataset_inference_without_private_data_is_an_error():
    data = tiny_scenario(ownership={"schemes": ["dataset_inference"], "independent": ["proxy"]})
    data["victim"].update(weights="victim.pt", nb_classes=10)
    del data["data"]["victim_train"]
    with pytest.raises(ScenarioError) as exc:
        build_scenario(data)
    assert "needs the victim's private training samples" in exc.value.message
    assert exc.value.path == "ownership.schemes.0"
    data["data"]["secret"] = {"source": "digits", "split": "train"}
    data["ownership"]["private"] = "secret"
    assert build_scenario(data).ownership[0].plugin == "dataset_inference"


def test_ownership_needs_a_torch_victim_and_kept_cells():
    data = _own()
    data["victim"] = {"kind": "sklearn", "input": {"shape": [64]}}
    with pytest.raises(ScenarioError, match="PyTorch networks"):
        build_scenario(data)
    with pytest.raises(ScenarioError, match="cache_cells must be true"):
        build_scenario({**_own(), "output": {"cache_cells": False}})


def test_gates_may_name_a_scheme():
    gate = {"metric": "detected", "scheme": "backdoor", "attack": "copycat", "min": 1.0}
    assert build_scenario({**_own(), "expect": [gate]}).model.expect[0].scheme == "backdoor"
    with pytest.raises(ScenarioError) as exc:
        build_scenario({**_own(), "expect": [{**gate, "scheme": "dawn"}]})
    assert exc.value.path == "expect.0.scheme" and "no scheme 'dawn'" in exc.value.message


# ---------------------------------------------------------------- plan and a whole run


def test_ownership_cells_depend_on_every_extraction_cell():
    from stealcheck.plan import plan

    plain = plan(build_scenario(tiny_scenario()), "v")
    cells = plan(build_scenario(_own(schemes=["backdoor", "fingerprint"])), "v")
    assert not any(c.kind.startswith("ownership") for c in plain)
    by_kind = {}
    for c in cells:
        by_kind.setdefault(c.kind, []).append(c)
    models, = by_kind["ownership_models"]
    extraction = {c.key for c in by_kind["extraction"]}
    assert [c.name for c in by_kind["ownership"]] == ["ownership|backdoor||", "ownership|fingerprint||"]
    for c in by_kind["ownership"]:
        assert set(c.deps) == {cells[0].key, models.key} | extraction
    # a scheme that marks the victim makes another deployment: the victim's key changes, and so
    # does every extraction cell's; one that only observes leaves the victim alone
    assert cells[0].key != plain[0].key
    only_fingerprint = plan(build_scenario(_own(schemes=["fingerprint"])), "v")
    assert only_fingerprint[0].key == plain[0].key


def test_a_run_writes_ownership_rows_for_every_suspect(tmp_path):
    import yaml

    from stealcheck.cli import main
    from stealcheck.results import read_results

    data = tiny_scenario(seeds=[0], defences=["none"], budgets=[100, 300], attacks=["copycat"],
                         evaluation={"uniform_samples": 0}, output={"dir": str(tmp_path / "runs")},
                         ownership={"schemes": [{"backdoor": {"trigger": "noise", "size": 30}}, {"dawn": {"rate": 0.05}}],
                                    "false_claims": {"samples": 20, "steps": 10}},
                         expect=[{"metric": "detected", "scheme": "backdoor", "attack": "victim", "min": 1.0}])
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code = main(["run", str(path), "--quiet", "--out", str(tmp_path / "run")])
    frame = read_results(tmp_path / "run")
    own = frame[frame["kind"] == "ownership"]
    assert set(own["scheme"]) == {"backdoor:trigger=noise,size=30", "dawn:rate=0.05"}
    suspects = set(own["attack"].dropna())
    assert {"copycat", "victim", "independent:other_seed", "independent:other_arch", "independent:proxy",
            "false_claim"} <= suspects
    copies = own[(own["attack"] == "copycat") & (own["metric"] == "verification_queries")]
    assert len(copies) == 4  # two schemes x two checkpoints
    backdoor_copy = own[(own["attack"] == "copycat") & (own["scheme"].str.startswith("backdoor"))
                        & (own["metric"] == "verification_queries")]
    assert (backdoor_copy["value"] == 30).all()  # one query per trigger
    p = own[own["metric"] == "p_value"]["value"]
    assert ((p >= 0) & (p <= 1)).all()
    claims = own[(own["attack"] == "false_claim")]
    assert set(claims["defence"]) == {"none", "commitment", "verifier_generated"}
    # the commitment came after the independent models existed: no claim against them passes it
    assert (claims[claims["defence"] == "commitment"]["value"] == 0).all()
    # the gate reads the victim's backdoor verdict: its exit code and junit agree with that row
    import json

    victim = own[(own["attack"] == "victim") & own["scheme"].str.startswith("backdoor") & (own["metric"] == "detected")]
    gate = json.loads((tmp_path / "run" / "summary.json").read_text())["gates"][0]
    assert gate["observed"] == [{"defence": "", "attack": "victim", "budget": None, "value": victim["value"].iloc[0]}]
    assert code == (0 if victim["value"].iloc[0] == 1 else 1) and gate["passed"] == (code == 0)
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'id="ownership"' in html and "GOAL (TPR" in html and "independent:other_arch" in html


def test_dataset_inference_white_box_variant_on_a_local_suspect(tiny_world):
    from stealcheck.ownership.base import Suspect
    from stealcheck.ownership.cells import predict_fn
    from stealcheck.ownership.dataset_inference import DatasetInference
    from stealcheck.ownership.specs import DatasetInferenceParams

    scheme = DatasetInference(DatasetInferenceParams(samples=40, train_samples=150, directions=2, max_steps=5,
                                                     white_box=True))
    ctx = tiny_world["ctx_for"](tiny_world["victim"])
    evidence = scheme.prepare(ctx)

    def local(net):
        return Suspect("s", predict_fn(net), (1, 8, 8), 10, (0.0, 1.0), network=net)

    victim = scheme.verify(local(tiny_world["victim"].network), evidence, ctx)
    assert victim.extra["white_box"] == 1.0 and victim.queries == 0  # gradients, not queries
    assert victim.p_value < 0.01
    assert scheme.verify(local(tiny_world["independent"]), evidence, ctx).p_value > 0.01
    # a black-box suspect falls back to the blind walk
    assert scheme.verify(_suspect(tiny_world["victim"].network), evidence, ctx).extra["white_box"] == 0.0
