"""Output-perturbation defences."""

from __future__ import annotations

import numpy as np
import pytest

from stealcheck import registry
from stealcheck.defences.output_perturbation import Finite, LabelOnly
from stealcheck.scenario import resolve_plugin


def _build(item, nb_classes: int = 4):
    ref = resolve_plugin(registry.defences, item, "defences.0")
    return registry.defences.get(ref.plugin).obj.build(ref.params, nb_classes)


def _apply(fns, probs):
    out = probs
    for fn in fns:
        out = fn(out)
    return np.asarray(out)


def _typical_probs(n=200, k=10, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_label_only_on_a_batch_with_different_winners():
    probs = np.array([[0.7, 0.1, 0.1, 0.1],
                      [0.1, 0.6, 0.2, 0.1],
                      [0.2, 0.2, 0.5, 0.1],
                      [0.1, 0.1, 0.3, 0.5],
                      [0.1, 0.6, 0.2, 0.1]])
    out = LabelOnly()(probs)
    np.testing.assert_array_equal(out, np.eye(4)[[0, 1, 2, 3, 1]])
    np.testing.assert_array_equal(_apply(_build("label_only"), probs), out)


def test_none_defence_is_the_identity():
    probs = _typical_probs(5, 4)
    assert _build("none") == []
    np.testing.assert_array_equal(_apply(_build("none"), probs), probs)


def test_finite_replaces_only_non_finite_rows_by_uniform():
    def inner(p):
        out = p.copy()
        out[1] = np.nan
        out[3, 0] = np.inf
        return out

    probs = _typical_probs(4, 5)
    out = Finite(inner)(probs)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[[1, 3]], np.full((2, 5), 0.2))
    np.testing.assert_allclose(out[[0, 2]], probs[[0, 2]])


def test_reverse_sigmoid_keeps_argmax_for_typical_inputs():
    probs = _typical_probs()
    out = _apply(_build({"reverse_sigmoid": {"beta": 1.0, "gamma": 0.1}}, 10), probs)
    assert out.shape == probs.shape and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))
    assert np.abs(out - probs).sum(axis=1).mean() > 1e-3  # it does perturb


def test_reverse_sigmoid_defaults_via_registry_keep_argmax():
    probs = _typical_probs(seed=1)
    out = _apply(_build("reverse_sigmoid", 10), probs)
    np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))


def test_reverse_sigmoid_with_huge_beta_never_serves_nan():
    probs = np.vstack([_typical_probs(50, 10, seed=2), np.eye(10)[:3] * 0.999 + 0.0001])
    out = _apply(_build({"reverse_sigmoid": {"beta": 50.0, "gamma": 1.0}}, 10), probs)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)


def test_rounded_and_high_confidence():
    probs = np.array([[0.123456, 0.876544, 0.0]])
    np.testing.assert_allclose(_apply(_build({"rounded": {"decimals": 2}}), probs), [[0.12, 0.88, 0.0]])
    np.testing.assert_allclose(_apply(_build({"high_confidence": {"cutoff": 0.2}}), probs), [[0.0, 0.876544, 0.0]])


def test_chain_applies_steps_in_order():
    # 0.2496 rounds up to 0.25 and then survives the 0.25 cutoff; cut first, it is zeroed.
    probs = np.array([[0.2496, 0.7504, 0.0]])
    hc_then_round = _apply(_build({"chain": {"steps": [{"high_confidence": {"cutoff": 0.25}},
                                                       {"rounded": {"decimals": 2}}]}}), probs)
    round_then_hc = _apply(_build({"chain": {"steps": [{"rounded": {"decimals": 2}},
                                                       {"high_confidence": {"cutoff": 0.25}}]}}), probs)
    np.testing.assert_allclose(hc_then_round, [[0.0, 0.75, 0.0]])
    np.testing.assert_allclose(round_then_hc, [[0.25, 0.75, 0.0]])


def test_chain_equals_manual_composition():
    probs = _typical_probs(20, 4, seed=3)
    chain = _build({"chain": {"steps": [{"reverse_sigmoid": {"beta": 0.5}}, "label_only"]}})
    manual = _apply(_build({"reverse_sigmoid": {"beta": 0.5}}) + _build("label_only"), probs)
    np.testing.assert_allclose(_apply(chain, probs), manual)
    assert len(chain) == 2


def test_chain_validates_its_steps():
    from stealcheck.errors import ScenarioError

    with pytest.raises(ScenarioError) as info:
        resolve_plugin(registry.defences, {"chain": {"steps": ["rouned"]}}, "defences.0")
    assert "Did you mean 'rounded'?" in str(info.value)
    with pytest.raises(ScenarioError):
        resolve_plugin(registry.defences, {"chain": {"steps": []}}, "defences.0")


def test_chain_params_serialise_for_the_resolved_scenario():
    ref = resolve_plugin(registry.defences, {"chain": {"steps": [{"rounded": {"decimals": 1}}, "label_only"]}},
                         "defences.0")
    dumped = ref.to_dict()
    assert dumped["plugin"] == "chain"
    assert [s["plugin"] for s in dumped["params"]["steps"]] == ["rounded", "label_only"]
    assert dumped["params"]["steps"][0]["params"] == {"decimals": 1}
