"""The thief's recipe options: augmentation of the queried images (shapes, ranges, labels kept) and
label-free training on the unqueried pool (``thief.unlabelled``), which never spends a query."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FakeVictim, make_oracle, tiny_scenario
from stealcheck import registry
from stealcheck.attacks.base import AttackContext
from stealcheck.augment import gaussian_jitter, is_image_shape, random_affine
from stealcheck.datasets import Dataset
from stealcheck.errors import ScenarioError
from stealcheck.scenario import ThiefSpec, build_scenario, resolve_plugin
from stealcheck.thief import make_thief


def test_random_affine_keeps_shapes_and_ranges_and_moves_pixels():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 28, 28)
    out = random_affine(x, gen)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, x)
    # a small transform: the image stays mostly where it was (a shifted digit, not noise)
    digit = torch.zeros(8, 1, 28, 28)
    digit[:, :, 8:20, 12:16] = 1.0
    moved = random_affine(digit, gen)
    overlap = (moved * digit).sum(dim=(1, 2, 3)) / digit.sum(dim=(1, 2, 3))
    assert bool((overlap > 0.3).all()) and bool((moved.sum(dim=(1, 2, 3)) > 0.6 * digit.sum(dim=(1, 2, 3))).all())
    # each sample its own transform, reproducible from the seed
    assert not torch.allclose(moved[0], moved[1])
    again = random_affine(digit, torch.Generator().manual_seed(0).manual_seed(0))
    assert again.shape == digit.shape
    with pytest.raises(ValueError, match="image batches"):
        random_affine(torch.rand(4, 10), gen)


def test_jitter_stays_in_range_and_image_shapes_are_told_apart():
    gen = torch.Generator().manual_seed(0)
    out = gaussian_jitter(torch.full((50, 4), 0.99), gen, std=0.5, low=0.0, high=1.0)
    assert out.shape == (50, 4) and float(out.max()) <= 1.0 and float(out.min()) >= 0.0
    assert is_image_shape((1, 28, 28)) and is_image_shape([3, 32, 32])
    assert not is_image_shape((64,)) and not is_image_shape((1, 1, 64))


def test_augmented_fit_learns_the_queried_labels_of_images():
    """The victim's answer to each original is the target of its shifted copies: the thief still fits them."""
    rng = np.random.default_rng(0)
    x = np.zeros((200, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 2, 200)
    x[y == 0, :, 3:9, 5:7] = 1.0  # class 0: a vertical bar; class 1: a horizontal one
    x[y == 1, :, 5:7, 3:9] = 1.0
    x += rng.uniform(0, 0.2, size=x.shape).astype(np.float32)
    x = np.clip(x, 0, 1)
    spec = ThiefSpec(epochs=5, min_steps=150, max_steps=150, batch_size=32, augment=True)
    thief = make_thief(spec, "conv3", {"width": 4}, (1, 12, 12), 2, (0.0, 1.0), 0)
    thief.fit(x, y, batch_size=32, nb_epochs=5)
    assert thief.steps_trained == 150
    assert np.mean(thief.predict_proba(x).argmax(1) == y) > 0.95


D, K = 4, 3


@pytest.mark.parametrize("method", ["pseudo_label", "consistency", "mixup"])
@pytest.mark.parametrize("item", [{"knockoff": {"strategy": "random"}}, "copycat",
                                  {"activethief": {"strategy": "uncertainty", "seed_size": 10, "round_size": 10}}])
def test_label_free_training_never_calls_the_oracle(item, method):
    """Same queries, same count, same victim calls with the option on; the thief trained on the rest of the pool."""
    rng = np.random.default_rng(0)
    pool = Dataset(rng.uniform(size=(80, D)).astype(np.float32), None, "pool")
    runs = {}
    for unlabelled in (None, method):
        spec = ThiefSpec(architecture="mlp", arch_params={"hidden": [8]}, epochs=1, min_steps=4, max_steps=4,
                         batch_size=16, unlabelled=unlabelled)
        victim = FakeVictim(D, K)
        oracle = make_oracle(victim, D, K, budget=30)
        ref = resolve_plugin(registry.attacks, item, "attacks.0")
        ctx = AttackContext(oracle=oracle, pool=pool, budgets=[15, 30], thief_spec=spec, seed=0,
                            make_thief=lambda spec=spec: make_thief(spec, "mlp", {"hidden": [8]}, (D,), K,
                                                                    (0.0, 1.0), 0))
        seen = [(b, oracle.queries_used, thief.extra_metrics() if hasattr(thief, "extra_metrics") else {})
                for b, thief in registry.attacks.get(ref.plugin).obj(ref.params).run(ctx)]
        runs[unlabelled] = (seen, oracle, victim)
    (plain, o_plain, v_plain), (free, o_free, v_free) = runs[None], runs[method]
    assert [(b, q) for b, q, _ in free] == [(b, q) for b, q, _ in plain] == [(15, 15), (30, 30)]
    assert sum(v_free.calls) == sum(v_plain.calls) == 30  # the victim answered 30 inputs either way
    asked_free, asked_plain = o_free.clients["attacker"].inputs(), o_plain.clients["attacker"].inputs()
    if "activethief" in str(item):  # the selection reads the thief, which learns differently: same seed set
        np.testing.assert_array_equal(asked_free[:10], asked_plain[:10])
        assert len(np.unique(asked_free, axis=0)) == 30
    else:
        np.testing.assert_array_equal(asked_free, asked_plain)
    assert [m for _, _, m in plain] == [{}, {}]
    # the pool minus what was queried at that checkpoint, used without answers
    assert [m["unlabelled_pool_samples"] for _, _, m in free] == [65.0, 50.0]


def test_unqueried_is_the_pool_minus_the_trained_inputs():
    spec = ThiefSpec(architecture="mlp", unlabelled="pseudo_label")
    thief = make_thief(spec, "mlp", {"hidden": [4]}, (D,), K, (0.0, 1.0), 0)
    assert thief.unqueried(np.zeros((1, D))) is None  # no pool attached
    pool = np.random.default_rng(1).uniform(size=(10, D)).astype(np.float32)
    thief.attach_pool(pool)
    np.testing.assert_array_equal(thief.unqueried(pool[[2, 5]]), pool[[0, 1, 3, 4, 6, 7, 8, 9]])


def test_thief_options_are_validated_against_the_scenario():
    sc = build_scenario(tiny_scenario(thief={"architecture": "mlp", "unlabelled": "mixup"}))
    assert sc.model.thief.unlabelled.method == "mixup" and sc.model.thief.unlabelled.weight == 1.0
    with pytest.raises(ScenarioError, match="Input should be 'pseudo_label', 'consistency' or 'mixup'") as err:
        build_scenario(tiny_scenario(thief={"unlabelled": "fixmatch"}))
    assert err.value.path.startswith("thief.unlabelled")
    with pytest.raises(ScenarioError, match="needs images") as err:
        build_scenario(tiny_scenario(victim={"kind": "torch", "architecture": "mlp", "input": {"shape": [64]}},
                                     thief={"augment": True}))
    assert err.value.path == "thief.augment"
    with pytest.raises(ScenarioError, match="no attack of this scenario samples one") as err:
        build_scenario(tiny_scenario(thief={"unlabelled": "pseudo_label"}, attacks=[{"jbda": {"seed_data": "test"}}]))
    assert err.value.path == "thief.unlabelled"
    build_scenario(tiny_scenario(thief={"augment": True}))  # the tiny victim takes 1x8x8 images
