"""Active defences driven by a detector score: reject, proof-of-work (hashcash), misinformation.

A fake detector scores a query by its mean input value; benign clients send inputs in
[0, 0.5), attackers inputs in [0.5, 1]. The fake victim is the linear-softmax of conftest.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from stealcheck import registry
from stealcheck.defences.active import (AdaptiveMisinformation, ProofOfWork, Reject, latency_summary,
                                        misinformation_distribution, solve, threshold_at_fpr, verify)
from stealcheck.oracle import ActiveDefence
from stealcheck.scenario import resolve_plugin

from conftest import FakeVictim, make_oracle


class MeanPixelDetector:
    """Fake detector: score = mean input value (higher = more suspicious)."""

    per_client = False

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64).reshape(len(x), -1).mean(axis=1)


class FlagAfterDetector:
    """Fake per-client detector: flags a client from its ``after``-th query on."""

    per_client = True

    def __init__(self, after: int):
        self.after = after
        self.seen: dict[str, int] = {}

    def observe_index(self, client_id, x):
        before = self.seen.get(client_id, 0)
        self.seen[client_id] = before + len(x)
        if before + len(x) <= self.after:
            return None
        return max(0, self.after - before)


def _benign(n, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 0.5, size=(n, 4)).astype(np.float32)


def _attack(n, seed=1):
    return np.random.default_rng(seed).uniform(0.5, 1.0, size=(n, 4)).astype(np.float32)


def _calibration(n=2000, seed=2):
    return MeanPixelDetector().score(_benign(n, seed))


def _build(item, detector=None, calibration_scores=None, nb_classes=3):
    ref = resolve_plugin(registry.defences, item, "defences.0")
    info = registry.defences.get(ref.plugin)
    assert info.caps.needs_detector is True
    return info.obj.build(ref.params, nb_classes, detector=detector or MeanPixelDetector(),
                          calibration_scores=_calibration() if calibration_scores is None else calibration_scores)


# ---------------------------------------------------------------- hashcash

def _leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return 256 - value.bit_length()


@pytest.mark.parametrize("bits", [0, 1, 6, 12])
def test_solve_finds_a_nonce_that_verifies(bits):
    challenge = bytes(range(16))
    nonce = solve(challenge, bits)
    assert verify(challenge, nonce, bits)
    assert _leading_zero_bits(hashlib.sha256(challenge + nonce.to_bytes(8, "big")).digest()) >= bits
    if bits:
        # the smallest such nonce: every smaller one fails
        assert not any(verify(challenge, n, bits) for n in range(nonce))


def test_verify_refuses_wrong_nonces():
    challenge = b"stealcheck-test!"
    nonce = solve(challenge, 10)
    wrong = next(n for n in itertools.count(nonce + 1) if not verify(challenge, n, 10))
    assert not verify(challenge, wrong, 10)
    assert not verify(challenge, -1, 10) and not verify(challenge, 2**64, 10) and not verify(challenge, "7", 10)


def test_pow_refuses_a_wrong_nonce():
    def cheat(challenge, bits):
        return next(n for n in itertools.count() if not verify(challenge, n, bits))

    pow_, = _build({"pow": {"detector": "d", "seed": 0}})
    pow_.solver = cheat
    x = _attack(5)
    probs = FakeVictim()(x)
    resp = pow_.respond(x, probs, "attacker")
    assert not resp.answered.any()
    np.testing.assert_allclose(resp.probs, 1.0 / 3)
    assert pow_.stats["attacker"]["refused"] == 5


def test_pow_difficulty_rises_with_the_score():
    pow_, = _build({"pow": {"detector": "d", "min_bits": 4, "max_bits": 14, "ramp": 3.0}})
    sd = _calibration().std()
    scores = pow_.tau + np.array([-1.0, 0.0, 1e-9, 0.5, 1.0, 2.0, 3.0, 10.0]) * sd
    bits = pow_.difficulty(scores)
    assert bits.tolist()[:3] == [0, 0, 4]  # none at or below tau, min_bits just above
    assert bits[-2] == bits[-1] == 14 and np.all(np.diff(bits) >= 0)
    assert pow_.difficulty(np.array([np.inf, -np.inf])).tolist() == [14, 0]


def test_pow_time_is_measured_hard_puzzles_cost_benign_queries_do_not():
    pow_, = _build({"pow": {"detector": "d", "min_bits": 14, "max_bits": 14, "seed": 0}})
    benign, attack = _benign(20), _attack(8)
    resp_b = pow_.respond(benign, FakeVictim()(benign), "user")
    resp_a = pow_.respond(attack, FakeVictim()(attack), "attacker")
    assert resp_a.answered.all()  # solved and verified: the normal answer
    np.testing.assert_allclose(resp_a.probs, FakeVictim()(attack))
    # 14 bits = 16k SHA-256 on average: milliseconds in Python, far from 0
    assert np.all(resp_a.seconds > 0) and resp_a.seconds.mean() > 1e-3
    benign_above = MeanPixelDetector().score(benign) > pow_.tau
    assert np.all(resp_b.seconds[~benign_above] == 0.0)
    assert pow_.stats["attacker"]["puzzles"] == 8 and pow_.stats["attacker"]["bits"] == 8 * 14


def test_pow_through_the_oracle_delays_the_attacker_only():
    pow_, = _build({"pow": {"detector": "d", "min_bits": 12, "max_bits": 12, "seed": 0}})
    oracle = make_oracle(FakeVictim(), postprocessors=[pow_])
    for i in range(4):
        oracle.predict(_benign(25, seed=10 + i), client_id="user")
        oracle.predict(_attack(10, seed=20 + i), client_id="attacker")
    user, thief = oracle.clients["user"], oracle.clients["attacker"]
    assert user.answered_share >= 0.9 and thief.answered_share == 1.0
    assert len(user.response_seconds()) == 100 and len(thief.response_seconds()) == 40
    user_ms, thief_ms = latency_summary(user.response_seconds()), latency_summary(thief.response_seconds())
    assert thief_ms["mean_ms"] > 5 * user_ms["mean_ms"]


# ---------------------------------------------------------------- reject

@pytest.mark.parametrize("target_fpr", [0.01, 0.05, 0.2])
def test_threshold_reaches_the_target_fpr_on_calibration_scores(target_fpr):
    cal = np.random.default_rng(0).normal(size=10000)
    tau = threshold_at_fpr(cal, target_fpr)
    assert np.mean(cal > tau) == pytest.approx(target_fpr, abs=0.002)
    reject, = _build({"reject": {"detector": "d", "target_fpr": target_fpr}}, calibration_scores=cal)
    assert reject.tau == tau
    with pytest.raises(ValueError, match="calibration"):
        threshold_at_fpr(np.array([np.nan]), 0.05)


def test_reject_on_fresh_benign_data_stays_near_the_target_fpr():
    reject, = _build({"reject": {"detector": "d", "target_fpr": 0.05}})
    fresh = _benign(4000, seed=99)
    resp = reject.respond(fresh, FakeVictim()(fresh), "user")
    assert 1 - resp.answered.mean() == pytest.approx(0.05, abs=0.015)


def test_reject_through_the_oracle_refuses_high_scores():
    reject, = _build({"reject": {"detector": "d"}})
    victim = FakeVictim()
    oracle = make_oracle(victim, postprocessors=[reject])
    benign, attack = _benign(200, seed=5), _attack(50)
    out_b = oracle.predict(benign, client_id="user")
    out_a = oracle.predict(attack, client_id="attacker")
    np.testing.assert_allclose(out_a, 1.0 / 3)  # refused: the uniform distribution
    user, thief = oracle.clients["user"], oracle.clients["attacker"]
    assert thief.queries == 50 and thief.answered == 0 and thief.answered_share == 0.0
    assert user.queries == 200 and user.answered_share >= 0.9
    passed = MeanPixelDetector().score(benign) <= reject.tau
    assert user.answered == passed.sum()
    np.testing.assert_allclose(out_b[passed], victim(benign[passed]), rtol=1e-6)
    for record in (user, thief):
        seconds = record.response_seconds()
        assert len(seconds) == record.queries and np.all(seconds >= 0)


def test_reject_label_only_answers_the_top_class():
    reject, = _build({"reject": {"detector": "d", "mode": "label_only"}})
    x = np.concatenate([_attack(6), _benign(1)])
    x[-1] = 0.0  # clearly benign
    probs = FakeVictim()(x)
    resp = reject.respond(x, probs, "c")
    assert resp.answered.tolist() == [False] * 6 + [True]
    np.testing.assert_array_equal(resp.probs[:6], np.eye(3)[probs[:6].argmax(axis=1)])
    np.testing.assert_allclose(resp.probs[6], probs[6])


def test_per_client_detector_gates_from_the_flag_on():
    reject, = _build({"reject": {"detector": "prada"}}, detector=FlagAfterDetector(after=7))
    x = _benign(5)
    answered = np.concatenate([reject.respond(x, FakeVictim()(x), "c").answered for _ in range(3)])
    assert answered.tolist() == [True] * 7 + [False] * 8


# ---------------------------------------------------------------- misinformation

def test_misinformation_blend_equals_the_formula():
    mis, = _build({"misinformation": {"detector": "d", "k": 20.0}})
    x = np.concatenate([_benign(30), _attack(30)])
    y = FakeVictim()(x)
    resp = mis.respond(x, y, "c")
    a = 1.0 / (1.0 + np.exp(-20.0 * (MeanPixelDetector().score(x) - mis.tau)))
    y_hat = misinformation_distribution(y, "reverse")
    np.testing.assert_allclose(resp.probs, (1 - a)[:, None] * y + a[:, None] * y_hat, rtol=1e-10, atol=1e-12)
    assert resp.answered.tolist() == (a <= 0.5).tolist()
    assert resp.answered[:30].mean() > 0.8 and not resp.answered[30:].any()
    np.testing.assert_allclose(resp.probs.sum(axis=1), 1.0)
    assert np.all(resp.seconds == 0)


def test_misinformation_with_msp_score_is_the_papers_rule():
    class MaxSoftmax:
        per_client = False

        def score(self, x):
            return 1.0 - FakeVictim()(x).max(axis=1)

    x = np.random.default_rng(3).uniform(size=(50, 4)).astype(np.float32)
    y = FakeVictim()(x)
    mis = AdaptiveMisinformation(MaxSoftmax(), tau=0.3, k=15.0)
    a = mis.blend_weight(MaxSoftmax().score(x))
    tau_paper = 1 - 0.3
    np.testing.assert_allclose(a, 1.0 / (1.0 + np.exp(-15.0 * (tau_paper - y.max(axis=1)))), rtol=1e-10)


def test_misinformation_distributions_avoid_the_top_class():
    y = np.array([[0.7, 0.2, 0.1], [0.05, 0.15, 0.8]])
    uniform_other = misinformation_distribution(y, "uniform_other")
    np.testing.assert_allclose(uniform_other, [[0, 0.5, 0.5], [0.5, 0.5, 0]])
    reverse = misinformation_distribution(y, "reverse")
    np.testing.assert_allclose(reverse.sum(axis=1), 1.0)
    assert reverse[0].argmin() == 0 and reverse[0].argmax() == 2 and reverse[1].argmax() == 0
    np.testing.assert_allclose(reverse[0], (1 / y[0]) / (1 / y[0]).sum())
    with pytest.raises(ValueError, match="misinformation"):
        misinformation_distribution(y, "nope")


# ---------------------------------------------------------------- plugins

@pytest.mark.parametrize("item,cls", [
    ({"reject": {"detector": "d"}}, Reject),
    ({"reject": {"detector": "d", "mode": "label_only", "target_fpr": 0.01}}, Reject),
    ({"pow": {"detector": "d", "max_bits": 10}}, ProofOfWork),
    ({"misinformation": {"detector": "d", "misinformation": "uniform_other"}}, AdaptiveMisinformation),
])
def test_plugins_build_from_their_params(item, cls):
    built = _build(item)
    assert len(built) == 1 and isinstance(built[0], cls) and isinstance(built[0], ActiveDefence)
    x = _benign(4)
    resp = built[0].respond(x, FakeVictim()(x), "c")
    assert resp.probs.shape == (4, 3) and resp.answered.shape == (4,) and resp.seconds.shape == (4,)


def test_misinformation_default_steepness_follows_the_calibration_spread():
    mis, = _build({"misinformation": {"detector": "d"}})
    assert mis.k == pytest.approx(10.0 / _calibration().std())


@pytest.mark.parametrize("name,bad", [
    ("reject", {}),  # the detector is required
    ("reject", {"detector": "d", "target_fpr": 1.0}),
    ("reject", {"detector": "d", "mode": "maybe"}),
    ("pow", {"detector": "d", "min_bits": 12, "max_bits": 8}),
    ("pow", {"detector": "d", "max_bits": 40}),
    ("misinformation", {"detector": "d", "k": 0}),
])
def test_invalid_params_are_refused(name, bad):
    with pytest.raises(ValidationError):
        registry.defences.get(name).parse_params(bad)


def test_latency_summary_in_milliseconds():
    s = latency_summary(np.array([0.001] * 19 + [0.021]))
    assert s["mean_ms"] == pytest.approx(2.0) and s["p95_ms"] == pytest.approx(2.0)
    assert np.isnan(latency_summary(np.array([]))["mean_ms"])
