"""JBDA: the augmentation step, query accounting, variants, validation, and a short real extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stealcheck.attacks.jbda import JacobianAugmentation, softmax_class_gradient
from stealcheck.oracle import Oracle
from stealcheck.scenario import ThiefSpec
from stealcheck.thief import make_thief

D, K = 6, 3  # a tiny tabular problem: 6 features in [0, 1], 3 classes


def _linear_victim(seed: int = 0):
    w = np.random.default_rng(seed).normal(size=(D, K))

    def predict(x: np.ndarray) -> np.ndarray:
        z = x.reshape(len(x), -1) @ w
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return predict


def _oracle(budget: int | None = None, output: str = "label") -> Oracle:
    return Oracle(_linear_victim(), (D,), K, (0.0, 1.0), output_mode=output, budget=budget)


def _thief(seed: int = 0, **spec):
    spec = {"min_steps": 5, "max_steps": 10, **spec}
    return make_thief(ThiefSpec(**spec), "mlp", {"hidden": [8]}, (D,), K, (0.0, 1.0), seed=seed)


def _finite_difference_gradient(model, x: np.ndarray, labels: np.ndarray, h: float = 1e-3) -> np.ndarray:
    grad = np.zeros_like(x, dtype=np.float64)
    with torch.no_grad():
        def prob(z):
            p = torch.softmax(model(torch.tensor(z, dtype=torch.float32)).double(), dim=1).numpy()
            return p[np.arange(len(z)), labels]

        for j in range(x.shape[1]):
            e = np.zeros_like(x)
            e[:, j] = h
            grad[:, j] = (prob(x + e) - prob(x - e)) / (2 * h)
    return grad


def test_softmax_class_gradient_matches_finite_differences():
    thief = _thief()
    x = np.random.default_rng(1).uniform(0.2, 0.8, size=(20, D)).astype(np.float32)
    labels = np.random.default_rng(2).integers(0, K, size=20)
    analytic = softmax_class_gradient(thief.model, x, labels)
    numeric = _finite_difference_gradient(thief.model, x, labels)
    np.testing.assert_allclose(analytic, numeric, atol=2e-4)


@pytest.mark.parametrize("variant, direction", [("jbda", 1.0), ("jb-self", -1.0)])
def test_augmentation_moves_along_the_sign_of_the_substitute_jacobian(variant, direction):
    """x' - x = +-lambda * sign(dF_y/dx) for the oracle's label y, checked against finite differences,
    except where the input range clips the step."""
    lam = 0.1
    attack = JacobianAugmentation(_oracle(), nb_stolen=100, variant=variant, step_size=lam)
    thief = _thief()
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, size=(40, D)).astype(np.float32)
    x[:5, 0] = 0.02  # near the edges: the step must be clipped into [0, 1]
    x[5:10, 1] = 0.97
    labels = np.argmax(_oracle().predict(x), axis=1)
    new = attack.augment(thief, x, labels, round_index=0)
    assert new.shape == x.shape and new.dtype == np.float32
    assert new.min() >= 0.0 and new.max() <= 1.0
    expected_sign = direction * np.sign(_finite_difference_gradient(thief.model, x, labels))
    free = (x + lam < 1.0) & (x - lam > 0.0) & (expected_sign != 0)
    assert free.sum() > 150
    np.testing.assert_allclose((new - x)[free], lam * expected_sign[free], atol=1e-6)
    clipped = ~free & (expected_sign != 0)
    np.testing.assert_allclose(new[clipped], np.clip(x + lam * expected_sign, 0, 1)[clipped], atol=1e-6)


@pytest.mark.parametrize("variant", ["jbda", "jb-topk"])
def test_keep_saturated_leaves_features_at_the_range_ends_alone(variant):
    """The adaptive attacker's knob: features exactly at 0 or 1 stay put; the others move as without it."""
    x = np.random.default_rng(5).uniform(0.2, 0.8, size=(40, D)).astype(np.float32)
    x[:, 0] = 0.0  # a background feature
    x[:20, 1] = 1.0  # a saturated one
    labels = np.argmax(_oracle().predict(x), axis=1)
    thief = _thief()
    plain = JacobianAugmentation(_oracle(), nb_stolen=100, variant=variant).augment(thief, x, labels, 0)
    kept = JacobianAugmentation(_oracle(), nb_stolen=100, variant=variant, keep_saturated=True).augment(
        thief, x, labels, 0)
    ends = (x == 0.0) | (x == 1.0)
    assert np.array_equal(kept[ends], x[ends])
    assert not np.array_equal(plain[ends], x[ends])  # without the knob they move
    np.testing.assert_array_equal(kept[~ends], plain[~ends])


def test_sign_schedule_flips_every_tau_rounds():
    attack = JacobianAugmentation(_oracle(), nb_stolen=10, sign_period=2)
    assert [attack.step_sign(r) for r in range(6)] == [1, 1, -1, -1, 1, 1]
    assert JacobianAugmentation(_oracle(), nb_stolen=10).step_sign(5) == 1


def test_jb_topk_moves_towards_a_top_k_class_within_lambda():
    lam = 0.2
    attack = JacobianAugmentation(_oracle(), nb_stolen=100, variant="jb-topk", step_size=lam, top_k=2, topk_steps=4)
    thief = _thief()
    thief.fit(np.random.default_rng(0).uniform(size=(64, D)).astype(np.float32),
              _oracle().predict(np.random.default_rng(0).uniform(size=(64, D)).astype(np.float32)), nb_epochs=5)
    x = np.random.default_rng(4).uniform(0.3, 0.7, size=(30, D)).astype(np.float32)
    labels = np.argmax(_oracle().predict(x), axis=1)
    new = attack.augment(thief, x, labels, round_index=0)
    assert np.abs(new - x).max() <= lam + 1e-6
    # The step raises the substitute's probability of the chosen target class for most points.
    with torch.no_grad():
        before = torch.softmax(thief.model(torch.tensor(x)), 1).numpy()
        after = torch.softmax(thief.model(torch.tensor(new)), 1).numpy()
    order = np.argsort(-before, axis=1)
    targets = np.array([row[row != y][0] for row, y in zip(order, labels)])
    gain = after[np.arange(len(x)), targets] - before[np.arange(len(x)), targets]
    assert (gain > 0).mean() >= 0.9


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_queries_follow_seed_times_two_to_the_rounds(rounds):
    seed = np.random.default_rng(0).uniform(size=(10, D)).astype(np.float32)
    oracle = _oracle()
    attack = JacobianAugmentation(oracle, nb_stolen=10_000, nb_rounds=rounds)
    out = list(attack.iter_checkpoints([10_000], x=seed, thieved_classifier=_thief()))
    assert oracle.queries_used == 10 * 2 ** rounds
    assert out == [(10_000, out[0][1])]  # the unreachable checkpoint is still yielded, having used fewer
    assert len(oracle.clients["attacker"].inputs()) == 10 * 2 ** rounds  # every input sent is on record


def test_reservoir_bounds_the_growth():
    seed = np.random.default_rng(0).uniform(size=(10, D)).astype(np.float32)
    oracle = _oracle()
    # rounds 0, 1 double (10 -> 20 -> 40); from round 2 on only kappa = 15 new points per round.
    attack = JacobianAugmentation(oracle, nb_stolen=10_000, nb_rounds=5, reservoir_size=15, reservoir_after=2)
    list(attack.iter_checkpoints([10_000], x=seed, thieved_classifier=_thief()))
    assert oracle.queries_used == 40 + 3 * 15


@pytest.mark.parametrize("budgets", [[7], [15, 37, 100], [10, 20, 40]])
@pytest.mark.parametrize("variant", ["jbda", "jb-self", "jb-topk"])
def test_budget_is_spent_exactly_at_every_checkpoint(budgets, variant):
    seed = np.random.default_rng(0).uniform(size=(10, D)).astype(np.float32)
    oracle = _oracle(budget=max(budgets))
    attack = JacobianAugmentation(oracle, nb_stolen=max(budgets), variant=variant)
    seen = [q for q, _ in attack.iter_checkpoints(budgets, x=seed, thieved_classifier=_thief())]
    assert seen == budgets
    assert oracle.queries_used == max(budgets)


def test_extract_returns_the_trained_substitute():
    seed = np.random.default_rng(0).uniform(size=(10, D)).astype(np.float32)
    thief = _thief()
    out = JacobianAugmentation(_oracle(), nb_stolen=40).extract(seed, thieved_classifier=thief)
    assert out is thief and thief.steps_trained > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"nb_stolen": -5}, "'nb_stolen' parameter of JacobianAugmentation must be a positive integer. Got -5"),
    ({"nb_stolen": 10, "nb_epochs": 0}, "'nb_epochs'"),
    ({"nb_stolen": 10, "nb_rounds": 0}, "'nb_rounds' parameter of JacobianAugmentation must be a positive integer or None"),
    ({"nb_stolen": 10, "step_size": -0.1}, "'step_size' parameter of JacobianAugmentation must be a positive number"),
    ({"nb_stolen": 10, "variant": "jb-all"}, "'variant' parameter of JacobianAugmentation must be one of jbda, jb-self, jb-topk"),
    ({"nb_stolen": 10, "reservoir_size": 0}, "'reservoir_size'"),
    ({"nb_stolen": 10, "reservoir_after": -1}, "'reservoir_after'"),
    ({"nb_stolen": 10, "sign_period": 1.5}, "'sign_period'"),
    ({"nb_stolen": 10, "keep_saturated": "yes"}, "'keep_saturated' parameter of JacobianAugmentation must be a boolean"),
])
def test_parameter_validation(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        JacobianAugmentation(_oracle(), **kwargs)


def test_checkpoints_past_nb_stolen_are_refused_by_the_call():
    attack = JacobianAugmentation(_oracle(), nb_stolen=10)
    with pytest.raises(ValueError, match="checkpoints of JacobianAugmentation must be distinct positive integers of "
                                         "at most nb_stolen=10"):
        attack.iter_checkpoints([5, 20], x=np.zeros((2, D), np.float32), thieved_classifier=_thief())


def test_a_non_torch_substitute_is_refused_clearly():
    from art.estimators.classification import BlackBoxClassifier

    not_torch = BlackBoxClassifier(lambda x: np.zeros((len(x), K)), (D,), K)
    attack = JacobianAugmentation(_oracle(), nb_stolen=10)
    with pytest.raises(ValueError, match="needs a PyTorchClassifier substitute"):
        list(attack.iter_checkpoints([10], x=np.zeros((2, D), np.float32), thieved_classifier=not_torch))


@pytest.mark.parametrize("variant", ["jbda", "jb-self", "jb-topk"])
def test_short_extraction_of_the_mnist_victim(mnist_victim, variant):
    """150 held-out seeds, 600 label-only queries, a width-8 conv3 substitute.

    Floor 0.75: the substitute sees 150 real digits plus 450 synthetic neighbours, all labelled by
    a ~95% victim; papers report ~80% accuracy for JBDA substitutes on MNIST with more rounds and
    epochs. A broken Jacobian, wrong labels or a leak of unlabelled points drops well below it
    (chance is 0.10)."""
    victim, test, holdout = mnist_victim
    oracle = Oracle(victim.predict_proba, victim.input_shape, victim.nb_classes, victim.clip_values,
                    output_mode="label", budget=600)
    spec = ThiefSpec(min_steps=60, max_steps=150)
    thief = make_thief(spec, "conv3", {"width": 8}, victim.input_shape, 10, victim.clip_values, seed=0)
    seeds = holdout.x[np.random.default_rng(0).choice(len(holdout), 150, replace=False)]
    attack = JacobianAugmentation(oracle, nb_stolen=600, variant=variant, batch_size_fit=64)
    ((queries, thief),) = list(attack.iter_checkpoints([600], x=seeds, thieved_classifier=thief))
    assert queries == oracle.queries_used == 600
    fidelity = np.mean(thief.predict_proba(test.x).argmax(1) == victim.predict_proba(test.x).argmax(1))
    assert fidelity >= 0.75, fidelity
