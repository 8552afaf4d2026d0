"""The thief: learns from soft probability targets, with a step budget clipped to [min, max]."""

from __future__ import annotations

import numpy as np
import pytest

from stealcheck.scenario import ThiefSpec
from stealcheck.thief import ThiefClassifier, make_thief


def _problem(n, seed):
    """2-D points; the 'victim' says class 1 with probability sigmoid(8 (x0 - x1))."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 2)).astype(np.float32)
    s = 1.0 / (1.0 + np.exp(-8.0 * (x[:, 0] - x[:, 1])))
    return x, np.stack([1 - s, s], axis=1)


def _thief(min_steps=150, max_steps=300, seed=0, lr=None):
    kw = {"lr": lr} if lr else {}
    spec = ThiefSpec(architecture="mlp", min_steps=min_steps, max_steps=max_steps, batch_size=32, **kw)
    return make_thief(spec, "mlp", {"hidden": [16]}, (2,), 2, (0.0, 1.0), seed)


def test_thief_learns_soft_targets():
    x, y = _problem(300, 0)
    thief = _thief()
    assert isinstance(thief, ThiefClassifier)
    thief.fit(x, y, batch_size=32, nb_epochs=5)
    x_test, y_test = _problem(500, 1)
    p = thief.predict_proba(x_test)
    assert p.shape == (500, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    agreement = np.mean(p.argmax(1) == y_test.argmax(1))
    assert agreement > 0.9, agreement


def test_thief_learns_hard_labels_too():
    x, y = _problem(300, 2)
    thief = _thief()
    thief.fit(x, y.argmax(1), batch_size=32, nb_epochs=5)
    x_test, y_test = _problem(500, 3)
    assert np.mean(thief.predict_proba(x_test).argmax(1) == y_test.argmax(1)) > 0.9


@pytest.mark.parametrize("n,epochs,expected", [
    (100, 1, 20),     # 1 epoch of 4 batches = 4 steps -> raised to min_steps
    (320, 3, 30),     # 3 epochs of 10 batches = 30 steps: within [20, 50]
    (320, 100, 50),   # 1000 steps -> capped at max_steps
])
def test_step_count_respects_min_and_max(n, epochs, expected):
    x, y = _problem(n, 4)
    thief = _thief(min_steps=20, max_steps=50)
    thief.fit(x, y, batch_size=32, nb_epochs=epochs)
    assert thief.steps_trained == expected
    thief.fit(x, y, batch_size=32, nb_epochs=epochs)  # steps add up over fits (warm start)
    assert thief.steps_trained == 2 * expected and thief.fit_calls == 2


def test_single_sample_fit_is_one_step():
    x, y = _problem(1, 5)
    thief = _thief(min_steps=20, max_steps=50)
    thief.fit(x, y, batch_size=1, nb_epochs=1)
    assert thief.steps_trained == 1


def test_same_seed_same_thief():
    x, y = _problem(200, 6)
    a, b, c = _thief(seed=1), _thief(seed=1), _thief(seed=2)
    for t in (a, b, c):
        t.fit(x, y, batch_size=32, nb_epochs=2)
    x_test, _ = _problem(50, 7)
    np.testing.assert_array_equal(a.predict_proba(x_test), b.predict_proba(x_test))
    assert not np.array_equal(a.predict_proba(x_test), c.predict_proba(x_test))


def test_predict_returns_logits_and_predict_proba_their_softmax():
    thief = _thief()
    x, _ = _problem(10, 8)
    logits = np.asarray(thief.predict(x), dtype=np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(thief.predict_proba(x), e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_top_k_targets_are_renormalised_and_empty_rows_become_uniform(monkeypatch):
    """Top-k answers are not normalised (and may be all zero after a defence): the thief trains on distributions."""
    import stealcheck.thief as thief_module

    seen = []
    monkeypatch.setattr(thief_module, "fit_network", lambda net, x, y_soft, **kw: seen.append(y_soft))
    y = np.array([[0.3, 0.0], [0.0, 0.0], [0.2, 0.6]], dtype=np.float32)
    thief = _thief()
    thief.fit(np.zeros((3, 2), dtype=np.float32), y, batch_size=2, nb_epochs=1)
    np.testing.assert_allclose(seen[-1], [[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]], rtol=1e-6)
    thief.fit(np.zeros((3, 2), dtype=np.float32), np.array([1, 0, 1]), batch_size=2, nb_epochs=1)
    np.testing.assert_array_equal(seen[-1], [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # hard labels: one-hot
