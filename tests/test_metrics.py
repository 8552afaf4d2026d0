"""Metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stealcheck import metrics as M
from stealcheck import registry

VICTIM = np.array([[0.7, 0.2, 0.1],
                   [0.1, 0.8, 0.1],
                   [0.3, 0.3, 0.4],
                   [0.5, 0.25, 0.25]])
THIEF = np.array([[0.6, 0.3, 0.1],
                  [0.5, 0.4, 0.1],
                  [0.2, 0.2, 0.6],
                  [0.1, 0.1, 0.8]])
Y = np.array([0, 1, 1, 2])


def _metric(name, ev):
    return registry.metrics.get(name).obj(ev)


def _ev(**kw):
    base = dict(victim_test=VICTIM, thief_test=THIEF, y_test=Y, victim_unif=None, thief_unif=None, queries_used=42)
    base.update(kw)
    return M.ExtractionEval(**base)


def test_fidelity_and_accuracy():
    # argmax victim [0, 1, 2, 0], thief [0, 0, 2, 2], labels [0, 1, 1, 2]
    assert _metric("fidelity", _ev()) == pytest.approx(0.5)
    assert _metric("accuracy", _ev()) == pytest.approx(0.5)
    assert _metric("fidelity", _ev(thief_test=VICTIM)) == 1.0
    assert math.isnan(_metric("accuracy", _ev(y_test=None)))


def test_r_test_is_mean_total_variation():
    # rows: 0.5*(0.1+0.1+0) = 0.1; 0.5*(0.4+0.4) = 0.4; 0.5*(0.1+0.1+0.2) = 0.2; 0.5*(0.4+0.15+0.55) = 0.55
    assert _metric("r_test", _ev()) == pytest.approx((0.1 + 0.4 + 0.2 + 0.55) / 4)
    assert M.total_variation(VICTIM, VICTIM) == 0.0
    assert M.total_variation(np.eye(3), np.eye(3)[[1, 2, 0]]) == pytest.approx(1.0)


def test_uniform_metrics():
    ev = _ev(victim_unif=VICTIM[:2], thief_unif=THIEF[:2])
    assert _metric("r_unif", ev) == pytest.approx((0.1 + 0.4) / 2)
    assert _metric("fidelity_unif", ev) == pytest.approx(0.5)
    assert math.isnan(_metric("r_unif", _ev()))
    assert math.isnan(_metric("fidelity_unif", _ev()))


def test_kl_divergence():
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.25, 0.75]])
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    assert M.kl_divergence(p, q) == pytest.approx(0.5 * math.log(4 / 3))
    assert M.kl_divergence(q, q) == pytest.approx(0.0, abs=1e-12)
    # a zero where p has mass is clipped at 1e-12: large but finite
    assert M.kl_divergence(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == pytest.approx(math.log(1e12), rel=1e-6)
    # the metric is KL(victim || thief), averaged over rows
    ev = _ev(victim_test=np.vstack([p, q]), thief_test=np.vstack([q, q]))
    assert _metric("kl", ev) == pytest.approx(0.25 * math.log(4 / 3))


def test_queries_used():
    assert _metric("queries_used", _ev()) == 42.0


def test_utility_metrics():
    raw = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    label = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    ev = M.UtilityEval(raw, label, np.array([0, 2]))
    # L1: (0.3 + 0.2 + 0.1) and (0.1 + 0.2 + 0.1)
    assert _metric("output_distortion", ev) == pytest.approx(0.5)
    assert _metric("label_change_rate", ev) == pytest.approx(0.0)
    assert _metric("victim_accuracy", ev) == pytest.approx(0.5)

    flipped = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    ev = M.UtilityEval(raw, flipped, np.array([0, 1]))
    assert _metric("label_change_rate", ev) == pytest.approx(0.5)
    assert _metric("victim_accuracy", ev) == pytest.approx(0.5)
    assert _metric("output_distortion", M.UtilityEval(raw, raw, None)) == 0.0


def test_metric_scopes():
    assert M.metric_scope("fidelity") == "extraction"
    assert M.metric_scope("output_distortion") == "utility"
    extraction = {i.name for i in registry.metrics.items() if i.caps.scope == "extraction"}
    assert {"fidelity", "accuracy", "r_test", "r_unif", "kl", "queries_used"} <= extraction
    assert {i.name for i in registry.metrics.items() if i.caps.scope == "utility"} >= {
        "victim_accuracy", "output_distortion", "label_change_rate"}
