"""Attacks: the robust adaptive KnockoffNets bandit and the budget checkpoints of every attack."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FakeVictim, make_oracle
from stealcheck import registry
from stealcheck.attacks.art_extraction import RobustKnockoffNets
from stealcheck.attacks.base import AttackContext
from stealcheck.datasets import Dataset
from stealcheck.scenario import ThiefSpec
from stealcheck.thief import make_thief

NB_FEATURES, NB_CLASSES = 4, 10
SPEC = ThiefSpec(architecture="mlp", arch_params={"hidden": [8]}, epochs=1, min_steps=2, max_steps=4, batch_size=16)


def _constant_victim(x):
    """Always the same one-hot answer: every reward statistic has zero variance."""
    out = np.zeros((len(x), NB_CLASSES))
    out[:, 4] = 1.0
    return out


def _pool(labels=(3, 7, 9), per_label=20, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(labels), per_label)
    x = rng.uniform(size=(len(y), NB_FEATURES)).astype(np.float32)
    return Dataset(x, y, "pool")


def _thief(seed=0):
    return make_thief(SPEC, "mlp", {"hidden": [8]}, (NB_FEATURES,), NB_CLASSES, (0.0, 1.0), seed)


@pytest.fixture
def record_bandit_probs(monkeypatch):
    """Record every probability vector passed to np.random.choice (the bandit's action distribution)."""
    seen: list[np.ndarray] = []
    original = np.random.choice

    def choice(a, size=None, replace=True, p=None):
        if p is not None:
            seen.append(np.array(p, dtype=float))
        return original(a, size=size, replace=replace, p=p)

    monkeypatch.setattr(np.random, "choice", choice)
    return seen


@pytest.mark.parametrize("reward", ["all", "div", "cert", "loss"])
def test_bandit_stays_a_distribution_with_degenerate_rewards(reward, record_bandit_probs):
    np.random.seed(0)
    oracle = make_oracle(_constant_victim, NB_FEATURES, NB_CLASSES, budget=40)
    attack = RobustKnockoffNets(classifier=oracle, batch_size_fit=16, nb_epochs=1, nb_stolen=40,
                                sampling_strategy="adaptive", reward=reward, use_probability=True)
    pool = _pool()
    out = list(attack.iter_checkpoints([10, 40], x=pool.x, y=pool.y, thieved_classifier=_thief()))
    assert [b for b, _ in out] == [10, 40]
    assert len(record_bandit_probs) == 40  # one action per query
    for p in record_bandit_probs:
        assert p.shape == (3,)  # one arm per distinct pool label
        assert np.isfinite(p).all() and (p >= 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
    assert oracle.queries_used == 40


def test_non_contiguous_labels_sample_every_arm_from_its_own_class():
    np.random.seed(1)
    victim = FakeVictim(NB_FEATURES, NB_CLASSES)
    oracle = make_oracle(victim, NB_FEATURES, NB_CLASSES, budget=60)
    pool = _pool(labels=(3, 7, 9), per_label=10)
    attack = RobustKnockoffNets(classifier=oracle, batch_size_fit=16, nb_epochs=1, nb_stolen=60,
                                sampling_strategy="adaptive", reward="cert")
    list(attack.iter_checkpoints([60], x=pool.x, y=pool.y, thieved_classifier=_thief()))
    asked = oracle.clients["attacker"].inputs()
    assert asked.shape == (60, NB_FEATURES)
    # every queried input comes from the pool, and the bandit explored more than one label
    index = {row.tobytes(): label for row, label in zip(pool.x, pool.y)}
    labels = [index[row.tobytes()] for row in asked]
    assert set(labels) <= {3, 7, 9} and len(set(labels)) >= 2


def test_checkpoints_out_of_range_are_refused():
    oracle = make_oracle(_constant_victim, NB_FEATURES, NB_CLASSES)
    attack = RobustKnockoffNets(classifier=oracle, nb_stolen=10, sampling_strategy="adaptive")
    with pytest.raises(ValueError, match="checkpoints"):
        attack.iter_checkpoints([5, 20], x=_pool().x, y=_pool().y, thieved_classifier=_thief())
    with pytest.raises(ValueError, match="reward_clip"):
        RobustKnockoffNets(classifier=oracle, nb_stolen=10, sampling_strategy="adaptive", reward_clip=0)


# ---------------------------------------------------------------- attack plugins through AttackContext


def _run_plugin(item, victim, budgets=(10, 25), pool=None, seed=0, output_mode="probabilities"):
    from stealcheck.scenario import resolve_plugin

    ref = resolve_plugin(registry.attacks, item, "attacks.0")
    oracle = make_oracle(victim, NB_FEATURES, NB_CLASSES, budget=max(budgets), output_mode=output_mode)
    pool = pool if pool is not None else _pool(per_label=15)
    ctx = AttackContext(oracle=oracle, pool=pool, budgets=list(budgets), thief_spec=SPEC, seed=seed,
                        make_thief=lambda: _thief(seed))
    checkpoints = []
    for budget, thief in registry.attacks.get(ref.plugin).obj(ref.params).run(ctx):
        checkpoints.append((budget, oracle.queries_used, thief))
    return checkpoints, oracle


@pytest.mark.parametrize("item", [
    {"knockoff": {"strategy": "random"}},
    {"knockoff": {"strategy": "random", "use_probability": False}},
    {"knockoff": {"strategy": "adaptive", "reward": "all"}},
    {"knockoff": {"strategy": "adaptive", "reward": "cert"}},
    "copycat",
])
def test_attack_queries_exactly_the_budget_at_each_checkpoint(item):
    checkpoints, oracle = _run_plugin(item, FakeVictim(NB_FEATURES, NB_CLASSES), budgets=(10, 25))
    assert [(b, q) for b, q, _ in checkpoints] == [(10, 10), (25, 25)]
    assert oracle.total_queries == 25
    for _, _, thief in checkpoints:
        probs = thief.predict_proba(np.zeros((2, NB_FEATURES), dtype=np.float32))
        assert probs.shape == (2, NB_CLASSES) and np.isfinite(probs).all()


def test_adaptive_knockoff_survives_a_constant_victim():
    checkpoints, oracle = _run_plugin({"knockoff": {"strategy": "adaptive", "reward": "all"}}, _constant_victim,
                                      budgets=(5, 15, 30))
    assert [(b, q) for b, q, _ in checkpoints] == [(5, 5), (15, 15), (30, 30)]


def test_random_knockoff_queries_nested_prefixes():
    """The inputs bought for a small checkpoint are reused (not re-bought) at the next one."""
    checkpoints, oracle = _run_plugin({"knockoff": {"strategy": "random"}}, FakeVictim(NB_FEATURES, NB_CLASSES),
                                      budgets=(10, 25))
    asked = oracle.clients["attacker"].inputs()
    assert len(asked) == 25 and len(np.unique(asked, axis=0)) == 25


def test_same_seed_same_queries_and_thief():
    a, oa = _run_plugin("copycat", FakeVictim(NB_FEATURES, NB_CLASSES), seed=3)
    b, ob = _run_plugin("copycat", FakeVictim(NB_FEATURES, NB_CLASSES), seed=3)
    np.testing.assert_array_equal(oa.clients["attacker"].inputs(), ob.clients["attacker"].inputs())
    x = np.random.default_rng(0).uniform(size=(5, NB_FEATURES)).astype(np.float32)
    np.testing.assert_array_equal(a[-1][2].predict_proba(x), b[-1][2].predict_proba(x))
    c, oc = _run_plugin("copycat", FakeVictim(NB_FEATURES, NB_CLASSES), seed=4)
    assert not np.array_equal(oa.clients["attacker"].inputs(), oc.clients["attacker"].inputs())


def test_copycat_works_behind_a_label_only_api():
    checkpoints, oracle = _run_plugin("copycat", FakeVictim(NB_FEATURES, NB_CLASSES), output_mode="label")
    assert [b for b, _, _ in checkpoints] == [10, 25]
