"""Detectors that use the victim itself: max-softmax, energy, Outlier Exposure, EDM.

A small MLP victim on scikit-learn's 8x8 digits (about 93% test accuracy after 200 steps), 600
built-in glyphs as the outlier set, the same 200-step recipe for OE and EDM. Every detector is
fitted once per module. Thresholds were measured on this setting (single thread, seed 0; with 300
steps in brackets) and set with a margin:

- AUROC, held-out digits vs uniform noise: msp 0.91 (0.90), energy 0.95 (0.94), oe 0.80 (0.88),
  edm 1.00 (1.00); vs glyphs of another seed than the training outliers: msp 0.93 (0.94),
  energy 0.83 (0.86), oe 0.995 (0.999), edm 1.00 (1.00). Floor 0.7 for every detector on both
  (random scores give 0.5, an inverted sign well below; OE is taught to flatten glyphs, not noise,
  hence its lower noise AUROC), 0.95 for OE and EDM on glyphs (the family they were exposed to).
- Serving accuracy: victim 0.93, OE 0.93, EDM 0.94 -> floor 0.88 and at most 3 points below the
  victim.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import network_outputs
from stealcheck import registry
from stealcheck.adapters.networks import build_network, fit_network, one_hot
from stealcheck.datasets import DataContext, Dataset
from stealcheck.detectors.detectors import DetectorContext
from stealcheck.detectors.edm import route

SHAPE = (1, 8, 8)
STEPS = 200
DETECTORS = ["msp", "energy", "oe", "edm"]


def _source(name: str, params: dict, seed: int = 0) -> Dataset:
    info = registry.data_sources.get(name)
    return info.obj(info.parse_params(params), DataContext(SHAPE, (0.0, 1.0), seed))


@pytest.fixture(scope="module")
def setting():
    """(context, held-out digits, uniform noise, glyphs unseen in training, victim accuracy)."""
    torch.set_num_threads(1)
    train = _source("digits", {"split": "train", "layout": "stretch"})
    test = _source("digits", {"split": "test", "layout": "stretch"})
    outliers = _source("glyphs", {"size": 600}, seed=0)
    unseen_glyphs = _source("glyphs", {"size": 300}, seed=1).x
    noise = np.random.default_rng(5).uniform(0.0, 1.0, (300, *SHAPE)).astype(np.float32)

    def make_network():
        return build_network("mlp", SHAPE, 10)

    torch.manual_seed(0)
    victim = make_network()
    fit_network(victim, train.x, one_hot(train.y, 10), steps=STEPS, batch_size=64, lr=3e-3, seed=0)
    logits, predict_proba = network_outputs(victim)

    ctx = DetectorContext(predict_proba=predict_proba, nb_classes=10, input_shape=SHAPE, clip_values=(0.0, 1.0),
                          train=train, outliers=outliers, logits=logits, make_network=make_network,
                          victim_network=victim, train_recipe={"steps": STEPS, "batch_size": 64, "lr": 3e-3})
    accuracy = float((predict_proba(test.x).argmax(1) == test.y).mean())
    return ctx, test, noise, unseen_glyphs, accuracy


def _make(name: str, params: dict | None = None):
    info = registry.detectors.get(name)
    return info.obj(info.parse_params(params or {}))


@pytest.fixture(scope="module")
def fitted(setting):
    ctx = setting[0]
    return {name: _make(name).fit(ctx) for name in DETECTORS}


def _auroc(benign: np.ndarray, attack: np.ndarray) -> float:
    return roc_auc_score(np.r_[np.zeros(len(benign)), np.ones(len(attack))], np.r_[benign, attack])


@pytest.mark.parametrize("name", DETECTORS)
def test_scores_are_finite_and_one_per_query(name, fitted, setting):
    det, test = fitted[name], setting[1]
    scores = det.score(test.x)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    assert det.score(test.x[:0]).shape == (0,)
    np.testing.assert_allclose(det.score(test.x[:7]), scores[:7], rtol=1e-6, atol=1e-9)  # row-independent
    assert det.fit_seconds is not None and det.fit_seconds >= 0


@pytest.mark.parametrize("name", DETECTORS)
def test_separates_out_of_distribution_batches(name, fitted, setting):
    det, (_, test, noise, unseen_glyphs, _) = fitted[name], setting
    benign = det.score(test.x)
    assert _auroc(benign, det.score(noise)) > 0.7
    floor = 0.95 if det.needs_outliers else 0.7
    assert _auroc(benign, det.score(unseen_glyphs)) > floor


def test_outlier_exposure_beats_the_plain_victim_on_its_outlier_family(fitted, setting):
    _, test, _, unseen_glyphs, _ = setting
    msp = _auroc(fitted["msp"].score(test.x), fitted["msp"].score(unseen_glyphs))
    oe = _auroc(fitted["oe"].score(test.x), fitted["oe"].score(unseen_glyphs))
    assert oe > msp


@pytest.mark.parametrize("name", DETECTORS)
def test_save_load_round_trip_gives_identical_scores(name, fitted, setting, tmp_path):
    ctx, test = setting[0], setting[1]
    det = fitted[name]
    det.save(tmp_path / name)
    loaded = _make(name).load(tmp_path / name, ctx)
    np.testing.assert_array_equal(loaded.score(test.x), det.score(test.x))
    assert loaded.fit_seconds == det.fit_seconds
    served = det.serving_predict(test.x)
    if det.replaces_victim:
        np.testing.assert_array_equal(loaded.serving_predict(test.x), served)
    else:
        assert served is None and loaded.serving_predict(test.x) is None


@pytest.mark.parametrize("name", ["oe", "edm"])
def test_serving_model_keeps_in_distribution_accuracy(name, fitted, setting):
    _, test, _, _, victim_accuracy = setting
    det = fitted[name]
    assert det.replaces_victim and det.needs_network and det.needs_outliers
    probs = det.serving_predict(test.x)
    assert probs.shape == (len(test), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    accuracy = (probs.argmax(axis=1) == test.y).mean()
    assert accuracy > 0.88 and accuracy > victim_accuracy - 0.03


def test_baselines_compute_what_they_say(fitted, setting):
    ctx, test = setting[0], setting[1]
    x = test.x[:50]
    np.testing.assert_allclose(fitted["msp"].score(x), 1.0 - ctx.predict_proba(x).max(axis=1))
    z = ctx.logits(x)
    np.testing.assert_allclose(fitted["energy"].score(x), -np.log(np.exp(z).sum(axis=1)), rtol=1e-10)
    hot = _make("energy", {"temperature": 2.0}).fit(ctx).score(x)
    np.testing.assert_allclose(hot, -2.0 * np.log(np.exp(z / 2.0).sum(axis=1)), rtol=1e-10)
    assert not fitted["msp"].replaces_victim and not fitted["energy"].needs_outliers


def test_energy_without_logits(setting):
    ctx, test = setting[0], setting[1]
    probs_only = DetectorContext(predict_proba=ctx.predict_proba, nb_classes=10, input_shape=SHAPE,
                                 clip_values=(0.0, 1.0), train=ctx.train)
    with pytest.raises(ValueError, match="logits"):
        _make("energy").fit(probs_only)  # T = 1 on log-probabilities is 0 for every input
    det = _make("energy", {"temperature": 0.5}).fit(probs_only)
    assert det.source_ == "log_probabilities"
    p = ctx.predict_proba(test.x[:20])
    np.testing.assert_allclose(det.score(test.x[:20]), -0.5 * np.log((p ** 2).sum(axis=1)), rtol=1e-8)


def test_edm_routing_is_deterministic_and_uses_every_member(fitted, setting):
    det, test = fitted["edm"], setting[1]
    chosen = det.route(test.x)
    np.testing.assert_array_equal(chosen, det.route(test.x.copy()))
    np.testing.assert_array_equal(chosen[:9], det.route(test.x[:9]))  # a row's member ignores its batch
    np.testing.assert_array_equal(chosen, route(test.x.astype(np.float64), 5, 0))  # float32 bytes hashed
    counts = np.bincount(chosen, minlength=5)
    assert len(counts) == 5 and counts.min() >= 0.1 * len(test)  # ~uniform over 5 members (expected 72 each)
    # the answering member's probabilities are served
    members = det.member_probabilities(test.x)
    np.testing.assert_allclose(det.serving_predict(test.x), members[chosen, np.arange(len(test))], rtol=1e-12)
    # a tiny change of the query re-draws the member (discontinuity), a different key gives other routes
    nudged = det.route(test.x + np.float32(1e-3))
    assert (nudged != chosen).mean() > 0.6
    assert (route(test.x, 5, 1) != chosen).mean() > 0.6


def test_edm_disagreement_variants_are_bounded(setting, fitted):
    ctx, test, noise = setting[0], setting[1], setting[2]
    cosine = fitted["edm"].score(noise)
    assert (cosine >= -1e-9).all() and (cosine <= 1 + 1e-9).all()
    state = fitted["edm"].state()
    for kind in ("variance", "vote"):
        det = _make("edm", {"disagreement": kind})
        det.setup(ctx)
        det.load_state(state)
        benign, attack = det.score(test.x), det.score(noise)
        assert ((benign >= 0) & (benign <= 1)).all()
        assert _auroc(benign, attack) > 0.9


@pytest.mark.parametrize("name", ["oe", "edm"])
def test_retraining_needs_outliers_and_a_network(name, setting):
    ctx = setting[0]
    no_outliers = DetectorContext(**{**ctx.__dict__, "outliers": None})
    with pytest.raises(ValueError, match="outlier"):
        _make(name).fit(no_outliers)
    no_network = DetectorContext(**{**ctx.__dict__, "make_network": None})
    with pytest.raises(ValueError, match="PyTorch"):
        _make(name).fit(no_network)


@pytest.mark.parametrize("name,params", [("oe", {"steps": 15}), ("edm", {"steps": 15, "members": 3})])
def test_retraining_is_deterministic_and_leaves_global_rng_alone(name, params, setting):
    ctx, test = setting[0], setting[1]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = _make(name, params).fit(ctx)
    after = torch.rand(3)
    b = _make(name, params).fit(ctx)
    np.testing.assert_array_equal(a.score(test.x), b.score(test.x))
    np.testing.assert_array_equal(before, after)


def test_edm_refuses_a_state_with_another_ensemble_size(fitted, setting):
    det = _make("edm", {"members": 3})
    det.setup(setting[0])
    with pytest.raises(ValueError, match="members"):
        det.load_state(fitted["edm"].state())
