"""Conformance: every built-in attack's ART class has the one checkpoint signature
(``CheckpointedExtraction.iter_checkpoints``), its plugin goes through it, and for a tiny victim it
yields exactly the requested budgets, in order, with the oracle at exactly that many queries.

The one documented exception: Lowd-Meek spends a budget in whole boundary searches (a witness and
log2(1/eps) queries each), so at a checkpoint it may have asked fewer, never more."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from art.attacks.attack import ExtractionAttack
from sklearn.tree import DecisionTreeClassifier

from conftest import FakeVictim
from stealcheck import registry
from stealcheck.adapters.sklearn_victim import tree_node_ids
from stealcheck.attacks.base import AttackContext, CheckpointedExtraction
from stealcheck.datasets import Dataset
from stealcheck.oracle import Oracle
from stealcheck.scenario import ThiefSpec, resolve_plugin
from stealcheck.thief import make_thief

SPEC = ThiefSpec(architecture="mlp", arch_params={"hidden": [8]}, epochs=1, min_steps=2, max_steps=4, batch_size=16)
D, K = 4, 3


def _tree_victim():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(300, 3))
    y = (x[:, 0] > 0.4).astype(int) + (x[:, 1] > 0.7) * (x[:, 2] < 0.5)
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)
    return tree


def _flat_oracle(nb_classes: int, output: str, budget: int) -> Oracle:
    return Oracle(FakeVictim(D, nb_classes), (D,), nb_classes, (0.0, 1.0), output_mode=output, budget=budget)


def _tree_oracle(output: str, budget: int) -> Oracle:
    tree = _tree_victim()
    return Oracle(lambda x: tree.predict_proba(np.asarray(x, dtype=np.float64)), (3,), 3, (0.0, 1.0),
                  output_mode="leaf", leaf_predict=lambda x: tree_node_ids(tree, x), budget=budget)


# attack item, oracle factory (output mode, budget) -> Oracle, budgets
CASES = {
    "knockoff:random": ({"knockoff": {"strategy": "random"}}, lambda o, b: _flat_oracle(K, o, b), [10, 25]),
    "knockoff:adaptive": ({"knockoff": {"strategy": "adaptive", "reward": "all"}},
                          lambda o, b: _flat_oracle(K, o, b), [10, 25]),
    "copycat": ("copycat", lambda o, b: _flat_oracle(K, o, b), [10, 25]),
    "activethief": ({"activethief": {"strategy": "kcenter", "seed_size": 4, "round_size": 8}},
                    lambda o, b: _flat_oracle(K, o, b), [10, 25]),
    "jbda": ({"jbda": {"seed_size": 6}}, lambda o, b: _flat_oracle(K, o, b), [7, 20, 50]),
    "dfme": ({"dfme": {"batch_size": 16, "nz": 8, "generator_width": 4}}, lambda o, b: _flat_oracle(K, o, b),
             [50, 120]),
    "maze": ({"maze": {"batch_size": 16, "nz": 8, "generator_width": 4}}, lambda o, b: _flat_oracle(K, o, b),
             [50, 300]),
    "equation_solving": ({"equation_solving": {"model": "softmax"}}, lambda o, b: _flat_oracle(K, o, b), [7, 15]),
    "lowd_meek": ("lowd_meek", lambda o, b: _flat_oracle(2, o, b), [25, 60]),  # at most the budget
    "retraining": ({"retraining": {"strategy": "adaptive", "round_size": 10}}, lambda o, b: _flat_oracle(K, o, b),
                   [15, 40]),
    "path_finding": ("path_finding", lambda o, b: _tree_oracle(o, b), [20, 60]),
}


def _builtin_attacks():
    return [info for info in registry.attacks.items() if info.obj.__module__.startswith("stealcheck.attacks.")]


def test_every_builtin_attack_has_a_conformance_case():
    assert {info.name for info in _builtin_attacks()} == {key.split(":")[0] for key in CASES}


@pytest.mark.parametrize("name", sorted(info.name for info in _builtin_attacks()))
def test_the_art_class_has_the_one_signature(name):
    cls = registry.attacks.get(name).obj.extraction_class
    assert issubclass(cls, ExtractionAttack) and issubclass(cls, CheckpointedExtraction)
    assert not inspect.isabstract(cls)
    # the signature is defined once: no class redefines iter_checkpoints, only the attack behind it
    assert cls.iter_checkpoints is CheckpointedExtraction.iter_checkpoints
    params = inspect.signature(cls.iter_checkpoints).parameters
    assert list(params) == ["self", "checkpoints", "x", "y", "thieved_classifier"]
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("x", "y", "thieved_classifier"))
    # checkpoints are given to the call, never to the constructor
    assert "checkpoints" not in inspect.signature(cls.__init__).parameters
    assert "checkpoints" not in cls.attack_params


@pytest.fixture
def calls(monkeypatch):
    """Every (attack instance, checkpoints) passed to CheckpointedExtraction.iter_checkpoints."""
    seen: list[tuple[CheckpointedExtraction, list[int]]] = []
    original = CheckpointedExtraction.iter_checkpoints

    def recording(self, checkpoints, **kwargs):
        seen.append((self, list(checkpoints)))
        return original(self, checkpoints, **kwargs)

    monkeypatch.setattr(CheckpointedExtraction, "iter_checkpoints", recording)
    return seen


@pytest.mark.parametrize("case", sorted(CASES))
def test_budgets_are_exact_and_in_order(case, calls):
    item, make_oracle, budgets = CASES[case]
    ref = resolve_plugin(registry.attacks, item, "attacks.0")
    info = registry.attacks.get(ref.plugin)
    output = {"lowd_meek": "label", "path_finding": "leaf"}.get(ref.plugin, "probabilities")
    oracle = make_oracle(output, max(budgets))
    rng = np.random.default_rng(0)
    pool = Dataset(rng.uniform(size=(60, D)).astype(np.float32), rng.integers(0, K, 60), "pool")
    shape = tuple(oracle.input_shape)
    ctx = AttackContext(oracle=oracle, pool=pool, budgets=list(budgets), thief_spec=SPEC, seed=0,
                        make_thief=lambda: make_thief(SPEC, "mlp", {"hidden": [8]}, shape, oracle.nb_classes,
                                                      (0.0, 1.0), 0),
                        load_data=lambda role: pool)
    seen = [(budget, oracle.queries_used) for budget, _ in info.obj(ref.params).run(ctx)]
    assert [b for b, _ in seen] == budgets
    if ref.plugin == "lowd_meek":
        assert all(0 < q <= b for b, q in seen) and seen[0][1] < seen[1][1]
    else:
        assert seen == [(b, b) for b in budgets]
    # the plugin went through the one signature, on its declared class, with the scenario's budgets
    assert [c for _, c in calls] == [budgets]
    (attack, _), = calls
    assert isinstance(attack, info.obj.extraction_class)
    # bad checkpoints are refused by the call itself, before any query
    for bad in ([0, 5], [5, 5], [], [2.5]):
        with pytest.raises(ValueError, match=f"checkpoints of {type(attack).__name__} must be distinct positive"):
            attack.iter_checkpoints(bad)
    if hasattr(attack, "nb_stolen"):
        with pytest.raises(ValueError, match=f"at most nb_stolen={attack.nb_stolen}"):
            attack.iter_checkpoints([attack.nb_stolen + 1])
    assert oracle.queries_used == seen[-1][1]
