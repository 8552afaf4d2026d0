"""The built-in glyph outlier set: shapes, ranges, determinism, visible letters, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from stealcheck import registry
from stealcheck.datasets import DataContext
from stealcheck.errors import ScenarioError


def _glyphs(params=None, shape=(1, 28, 28), value_range=(0.0, 1.0), seed=0):
    info = registry.data_sources.get("glyphs")
    return info.obj(info.parse_params(params or {}), DataContext(tuple(shape), tuple(value_range), seed))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_shape_dtype_labels(shape):
    ds = _glyphs({"size": 104}, shape=shape)
    assert ds.x.shape == (104, *shape) and ds.x.dtype == np.float32
    # 52 letters, twice each: balanced labels indexing the alphabet
    np.testing.assert_array_equal(np.bincount(ds.y, minlength=52), np.full(52, 2))
    if shape[0] == 3:  # grey glyphs: channels replicated
        np.testing.assert_array_equal(ds.x[:, 0], ds.x[:, 2])


def test_range_follows_the_victim_input_range():
    ds = _glyphs({"size": 50}, value_range=(-1.0, 1.0))
    assert ds.x.min() == -1.0  # black background at the bottom of the range
    assert ds.x.max() <= 1.0 and ds.x.max() > 0.9


def test_every_image_shows_a_letter_white_on_black():
    ds = _glyphs({"size": 300})
    flat = ds.x.reshape(len(ds), -1)
    assert flat.max(axis=1).min() > 0.5  # every glyph has bright strokes
    lit = (flat > 0.5).mean(axis=1)
    # strokes cover a few percent of the image, like MNIST's (~10-20% of 28x28 above 0.5)
    assert 0.005 < lit.min() and lit.max() < 0.4 and 0.03 < lit.mean() < 0.2
    corners = ds.x[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners < 0.1).mean() > 0.95  # background stays black


def test_small_inputs_keep_the_letters_visible():
    flat = _glyphs({"size": 300}, shape=(1, 8, 8)).x.reshape(300, -1)
    assert flat.max(axis=1).min() > 0.2  # thin lowercase letters are antialiased, not lost


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = _glyphs({"size": 40}, seed=3), _glyphs({"size": 40}, seed=3), _glyphs({"size": 40}, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x) and not np.array_equal(a.y, c.y)


def test_jitter_makes_copies_of_one_letter_differ():
    ds = _glyphs({"size": 20, "alphabet": "A"})
    assert (ds.y == 0).all()
    assert len({row.tobytes() for row in ds.x}) == 20
    still = _glyphs({"size": 5, "alphabet": "A", "scale": [1.0, 1.0], "rotation": 0, "shift": 0, "max_stroke": 0})
    assert all(np.array_equal(still.x[0], img) for img in still.x)  # no jitter: identical renders


def test_alphabet_sets_the_classes():
    ds = _glyphs({"size": 30, "alphabet": "XO"})
    assert set(ds.y.tolist()) == {0, 1}
    assert registry.data_sources.get("glyphs").caps.static_size(
        registry.data_sources.get("glyphs").parse_params({"size": 30})) == 30


@pytest.mark.parametrize("bad", [{"alphabet": "ABA"}, {"alphabet": ""}, {"alphabet": "A B"},
                                 {"scale": [1.2, 0.8]}, {"scale": [0.0, 1.0]}, {"size": 0}, {"rotation": -5}])
def test_invalid_params_are_refused(bad):
    with pytest.raises(ValidationError):
        registry.data_sources.get("glyphs").parse_params(bad)


def test_tabular_victim_is_refused_with_a_readable_error():
    with pytest.raises(ScenarioError, match="image input shape"):
        _glyphs({"size": 5}, shape=(64,))
