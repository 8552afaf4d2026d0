"""The oracle: query counting, budgets, per-client records, output modes; and the attacker's
caching client."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FakeVictim, make_oracle
from stealcheck.errors import BudgetExceededError
from stealcheck.oracle import CachingClient, apply_output_mode

PROBS = np.array([[0.1, 0.6, 0.3],
                  [0.5, 0.2, 0.3],
                  [0.2, 0.2, 0.6],
                  [0.3, 0.3, 0.4]])


def test_probabilities_mode_is_identity():
    np.testing.assert_array_equal(apply_output_mode(PROBS, "probabilities"), PROBS)


def test_label_mode_is_row_wise_one_hot():
    out = apply_output_mode(PROBS, "label")
    expected = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=float)
    np.testing.assert_array_equal(out, expected)
    # unlike ART's ClassLabels, a row never carries another row's winner
    assert (out.sum(axis=1) == 1).all()


def test_label_mode_ties_pick_the_first_class():
    np.testing.assert_array_equal(apply_output_mode(np.array([[0.4, 0.4, 0.2]]), "label"), [[1, 0, 0]])


def test_top_k_keeps_k_largest_per_row_without_renormalising():
    out = apply_output_mode(PROBS, "top_k", top_k=2)
    expected = np.array([[0.0, 0.6, 0.3],
                         [0.5, 0.0, 0.3],
                         [0.2, 0.0, 0.6],   # tie 0.2/0.2: the first one is kept
                         [0.3, 0.0, 0.4]])
    np.testing.assert_allclose(out, expected)
    np.testing.assert_allclose(apply_output_mode(PROBS, "top_k", top_k=1), apply_output_mode(PROBS, "label") * PROBS)
    np.testing.assert_allclose(apply_output_mode(PROBS, "top_k", top_k=10), PROBS)  # k > classes: everything


def test_unknown_output_mode_raises():
    with pytest.raises(ValueError, match="output mode"):
        apply_output_mode(PROBS, "logits")


def test_oracle_counts_every_sample_and_answers_like_the_victim(fake_victim):
    oracle = make_oracle(fake_victim)
    x = np.random.default_rng(0).uniform(size=(7, 4)).astype(np.float32)
    out = oracle.predict(x[:3])
    oracle.predict(x[3:])
    assert oracle.queries_used == 7 and oracle.total_queries == 7
    # answers are the victim's float64 probabilities, bit for bit (a real API sends JSON doubles)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, fake_victim(x[:3]))
    np.testing.assert_array_equal(oracle.clients["attacker"].inputs(), x)


def test_oracle_enforces_budget_before_answering():
    victim = FakeVictim()
    oracle = make_oracle(victim, budget=5)
    x = np.random.default_rng(1).uniform(size=(6, 4)).astype(np.float32)
    oracle.predict(x[:3])
    calls = len(victim.calls)
    with pytest.raises(BudgetExceededError, match="3 of 5"):
        oracle.predict(x[3:6])  # 3 + 3 > 5
    assert oracle.queries_used == 3
    assert len(victim.calls) == calls  # the victim was never asked
    assert len(oracle.clients["attacker"].batches) == 1
    oracle.predict(x[3:5])  # exactly up to the budget is fine
    assert oracle.queries_used == 5
    with pytest.raises(BudgetExceededError):
        oracle.predict(x[5:6])
    assert oracle.queries_used == 5


def test_oracle_records_per_client(fake_victim):
    oracle = make_oracle(fake_victim, budget=4)
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=(3, 4)), rng.uniform(size=(4, 4))
    oracle.predict(a)
    oracle.predict(b, client_id="honest")  # budgets are per client
    assert oracle.clients["attacker"].queries == 3
    assert oracle.clients["honest"].queries == 4
    assert oracle.queries_used == 3 and oracle.total_queries == 7
    np.testing.assert_allclose(oracle.clients["honest"].inputs(), b.astype(np.float32))
    with pytest.raises(BudgetExceededError):
        oracle.predict(b[:1], client_id="honest")


def test_oracle_without_recording_still_counts(fake_victim):
    oracle = make_oracle(fake_victim, record_inputs=False)
    oracle.predict(np.zeros((5, 4)))
    assert oracle.queries_used == 5 and oracle.clients["attacker"].batches == []


def test_oracle_rejects_wrong_input_shape(fake_victim):
    oracle = make_oracle(fake_victim)
    with pytest.raises(ValueError, match="shape"):
        oracle.predict(np.zeros((2, 5)))
    assert oracle.queries_used == 0


def test_oracle_applies_postprocessors_in_order_then_output_mode():
    victim = lambda x: np.tile([0.1, 0.6, 0.3], (len(x), 1))  # noqa: E731
    swap = lambda p: p[:, ::-1]  # [0.3, 0.6, 0.1]  # noqa: E731
    bump_first = lambda p: p + np.array([0.5, 0.0, 0.0])  # [0.8, 0.6, 0.1] after swap  # noqa: E731
    oracle = make_oracle(victim, postprocessors=[swap, bump_first], output_mode="label")
    np.testing.assert_array_equal(oracle.predict(np.zeros((2, 4))), [[1, 0, 0], [1, 0, 0]])
    oracle = make_oracle(victim, postprocessors=[bump_first, swap], output_mode="label")
    np.testing.assert_array_equal(oracle.predict(np.zeros((2, 4))), [[0, 1, 0], [0, 1, 0]])


@pytest.mark.parametrize("mode,top_k", [("probabilities", 1), ("top_k", 2), ("label", 1)])
def test_oracle_output_modes_on_a_batch(mode, top_k):
    victim = lambda x: PROBS[: len(x)]  # noqa: E731
    oracle = make_oracle(victim, output_mode=mode, top_k=top_k)
    np.testing.assert_allclose(oracle.predict(np.zeros((4, 4))), apply_output_mode(PROBS, mode, top_k), rtol=1e-6)


@pytest.mark.parametrize("mode,top_k", [("probabilities", 1), ("top_k", 2), ("label", 1), ("leaf", 1)])
def test_oracle_answers_are_float64_in_every_output_mode(mode, top_k):
    """Even a float32 victim (a torch network) is answered in float64, and float64 probabilities are
    never rounded through float32 on the way out."""
    fine = np.array([[0.1 + 1e-12, 0.9 - 1e-12]])  # differs from its float32 rounding
    leaf = {"leaf_predict": lambda x: np.zeros(len(x), dtype=np.int64)} if mode == "leaf" else {}
    oracle = make_oracle(lambda x: np.repeat(fine, len(x), axis=0), nb_classes=2, output_mode=mode, top_k=top_k,
                         **leaf)
    out = oracle.predict(np.zeros((3, 4)))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, np.repeat(apply_output_mode(fine, mode, top_k), 3, axis=0))
    if mode == "probabilities":
        assert out[0, 0] != np.float32(fine[0, 0])
    low = make_oracle(lambda x: np.repeat(fine.astype(np.float32), len(x), axis=0), nb_classes=2, output_mode=mode,
                      top_k=top_k, **leaf)
    assert low.predict(np.zeros((2, 4))).dtype == np.float64


def test_oracle_keeps_float64_through_art_postprocessors(fake_victim):
    from art.defences.postprocessor import GaussianNoise, HighConfidence, ReverseSigmoid, Rounded

    x = np.random.default_rng(6).uniform(size=(5, 4))
    for post in (Rounded(decimals=3), HighConfidence(cutoff=0.2), GaussianNoise(scale=0.01),
                 ReverseSigmoid(beta=1.0, gamma=0.1)):
        out = make_oracle(fake_victim, postprocessors=[post]).predict(x)
        assert out.dtype == np.float64, type(post).__name__
    # Rounded keeps decimal values exactly as float64 doubles (not 0.123 rounded through float32)
    out = make_oracle(fake_victim, postprocessors=[Rounded(decimals=3)]).predict(x)
    np.testing.assert_array_equal(out, np.around(fake_victim(x.astype(np.float32)), 3))


def test_oracle_is_an_art_classifier(fake_victim):
    from art.estimators.classification.classifier import ClassifierMixin

    oracle = make_oracle(fake_victim)
    assert isinstance(oracle, ClassifierMixin)
    assert oracle.nb_classes == 3 and tuple(oracle.input_shape) == (4,)


# ---------------------------------------------------------------- caching client


def test_caching_client_pays_each_distinct_input_once():
    victim = FakeVictim()
    oracle = make_oracle(victim, budget=10)
    client = CachingClient(oracle)
    rng = np.random.default_rng(3)
    a, b, c = rng.uniform(size=(3, 4)).astype(np.float32)
    out = client.predict(np.stack([a, b, a, a]))  # duplicates within one batch
    assert oracle.queries_used == 2
    assert victim.calls[-1] == 2  # the duplicate never reached the victim
    # the cache hands back the oracle's float64 answers unchanged
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, victim(np.stack([a, b, a, a])))
    np.testing.assert_array_equal(out[0], out[2])

    out2 = client.predict(np.stack([b, c, a]))
    assert oracle.queries_used == 3  # only c was new
    np.testing.assert_array_equal(out2, victim(np.stack([b, c, a])))

    calls = len(victim.calls)
    client.predict(np.stack([c, b]))  # everything known: no query at all
    assert oracle.queries_used == 3 and len(victim.calls) == calls


def test_caching_client_answers_match_the_oracle_modes():
    oracle = make_oracle(FakeVictim(), output_mode="label")
    client = CachingClient(oracle)
    x = np.random.default_rng(4).uniform(size=(6, 4)).astype(np.float32)
    out = client.predict(np.concatenate([x, x[:2]]))
    assert out.shape == (8, 3)
    assert set(np.unique(out)) <= {0.0, 1.0} and (out.sum(axis=1) == 1).all()
    assert oracle.queries_used == 6


def test_caching_client_respects_the_budget():
    oracle = make_oracle(FakeVictim(), budget=3)
    client = CachingClient(oracle)
    x = np.random.default_rng(5).uniform(size=(4, 4)).astype(np.float32)
    client.predict(np.concatenate([x[:3], x[:3]]))  # 6 rows, 3 distinct: fits
    assert oracle.queries_used == 3
    with pytest.raises(BudgetExceededError):
        client.predict(x)
    assert oracle.queries_used == 3


def test_caching_client_empty_batch():
    oracle = make_oracle(FakeVictim())
    out = CachingClient(oracle).predict(np.zeros((0, 4), dtype=np.float32))
    assert out.shape == (0, 3) and oracle.queries_used == 0
