"""Victim adapters: local weights (safely), trusted pickles only, and the trained-victim cache."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from stealcheck import registry
from stealcheck.adapters.networks import build_network
from stealcheck.cache import Cache
from stealcheck.datasets import Dataset
from stealcheck.errors import ScenarioError
from stealcheck.victim import VictimContext

NB_FEATURES, NB_CLASSES = 4, 3


def _toy_data(n=120, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, NB_FEATURES)).astype(np.float32)
    y = np.argmax(x[:, :NB_CLASSES], axis=1)
    return Dataset(x, y, "toy")


def _ctx(base_dir: Path, cache_root: Path | None = None, data: Dataset | None = None) -> VictimContext:
    def load(role):
        if data is None:
            raise AssertionError(f"the victim should not need data set '{role}'")
        return data

    return VictimContext(load_data=load, data_fingerprint=lambda role: {"role": role, "n": len(data or [])},
                         cache=Cache(cache_root), seed=0, progress=False, base_dir=Path(base_dir))


def _build(kind, params, ctx):
    info = registry.victims.get(kind)
    return info.obj.build(info.parse_params(params), ctx)


TORCH_PARAMS = {"architecture": "mlp", "arch_params": {"hidden": [8]}, "input": {"shape": [NB_FEATURES]}}


def test_torch_victim_loads_a_state_dict(tmp_path):
    torch.manual_seed(0)
    net = build_network("mlp", (NB_FEATURES,), NB_CLASSES, {"hidden": [8]})
    torch.save(net.state_dict(), tmp_path / "w.pt")
    victim = _build("torch", {**TORCH_PARAMS, "weights": "w.pt", "nb_classes": NB_CLASSES}, _ctx(tmp_path))
    x = np.random.default_rng(1).uniform(size=(5, NB_FEATURES)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(victim.predict_proba(x), expected, rtol=1e-5, atol=1e-7)
    assert victim.nb_classes == NB_CLASSES and victim.input_shape == (NB_FEATURES,)
    assert victim.info["source"] == str(tmp_path / "w.pt")


class _RunsCode:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_torch_weights_are_loaded_without_running_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state": _RunsCode(str(marker))}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(ScenarioError) as info:
        _build("torch", {**TORCH_PARAMS, "weights": str(tmp_path / "evil.pt"), "nb_classes": NB_CLASSES},
               _ctx(tmp_path))
    assert not marker.exists()
    assert info.value.path == "victim.weights" and "evil.pt" in str(info.value)


@pytest.mark.parametrize("content", [b"not a checkpoint at all", "wrong-shapes"])
def test_bad_weights_file_is_a_scenario_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "wrong-shapes":
        torch.save(build_network("mlp", (NB_FEATURES,), NB_CLASSES, {"hidden": [5]}).state_dict(), path)
    else:
        path.write_bytes(content)
    with pytest.raises(ScenarioError) as info:
        _build("torch", {**TORCH_PARAMS, "weights": str(path), "nb_classes": NB_CLASSES}, _ctx(tmp_path))
    assert info.value.path == "victim.weights" and "cannot load" in str(info.value)


def test_torch_weights_missing_file_or_nb_classes(tmp_path):
    with pytest.raises(ScenarioError, match="not found"):
        _build("torch", {**TORCH_PARAMS, "weights": "nope.pt", "nb_classes": 3}, _ctx(tmp_path))
    torch.save(build_network("mlp", (NB_FEATURES,), NB_CLASSES, {"hidden": [8]}).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ScenarioError) as info:
        _build("torch", {**TORCH_PARAMS, "weights": "w.pt"}, _ctx(tmp_path))
    assert info.value.path == "victim.nb_classes"


def test_torch_victim_is_cached(tmp_path):
    data = _toy_data()
    params = {**TORCH_PARAMS, "train": {"steps": 30}}
    first = _build("torch", params, _ctx(tmp_path, tmp_path / "cache", data))
    second = _build("torch", params, _ctx(tmp_path, tmp_path / "cache", data))
    assert first.info["cached"] is False and second.info["cached"] is True
    assert first.info["cache_key"] == second.info["cache_key"]
    x = _toy_data(10, seed=5).x
    np.testing.assert_array_equal(first.predict_proba(x), second.predict_proba(x))
    assert (tmp_path / "cache" / "victims" / first.info["cache_key"] / "COMPLETE").exists()
    # a different recipe is a different entry
    third = _build("torch", {**params, "train": {"steps": 31}}, _ctx(tmp_path, tmp_path / "cache", data))
    assert third.info["cached"] is False and third.info["cache_key"] != first.info["cache_key"]


def test_default_cache_is_the_env_folder(tmp_path, cache_dir):
    assert Cache().root == cache_dir
    first = _build("torch", {**TORCH_PARAMS, "train": {"steps": 10}}, _ctx(tmp_path, None, _toy_data()))
    assert (cache_dir / "victims" / first.info["cache_key"]).is_dir()


def test_trained_torch_victim_learns(tmp_path):
    data = _toy_data(400)
    victim = _build("torch", {**TORCH_PARAMS, "arch_params": {"hidden": [32]}, "train": {"steps": 300}},
                    _ctx(tmp_path, tmp_path / "c", data))
    test = _toy_data(300, seed=9)
    p = victim.predict_proba(test.x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(p.argmax(1) == test.y) > 0.8


def test_sklearn_pickle_needs_trust_pickle(tmp_path):
    from sklearn.linear_model import LogisticRegression

    data = _toy_data()
    model = LogisticRegression(max_iter=500).fit(data.x, data.y)
    marker = tmp_path / "pwned"
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(ScenarioError) as info:
        _build("sklearn", {"path": "model.pkl", "input": {"shape": [NB_FEATURES]}}, _ctx(tmp_path))
    assert "trust_pickle" in str(info.value)
    assert not marker.exists()

    import joblib

    joblib.dump(model, tmp_path / "good.joblib")
    victim = _build("sklearn", {"path": "good.joblib", "trust_pickle": True, "input": {"shape": [NB_FEATURES]}},
                    _ctx(tmp_path))
    np.testing.assert_allclose(victim.predict_proba(data.x[:5]), model.predict_proba(data.x[:5]))
    with pytest.raises(ScenarioError, match="not found"):
        _build("sklearn", {"path": "gone.joblib", "trust_pickle": True, "input": {"shape": [NB_FEATURES]}},
               _ctx(tmp_path))


def test_sklearn_victim_is_cached(tmp_path):
    data = _toy_data()
    params = {"model": "logistic_regression", "input": {"shape": [NB_FEATURES]}}
    first = _build("sklearn", params, _ctx(tmp_path, tmp_path / "c", data))
    second = _build("sklearn", params, _ctx(tmp_path, tmp_path / "c", data))
    assert first.info["cached"] is False and second.info["cached"] is True
    np.testing.assert_array_equal(first.predict_proba(data.x), second.predict_proba(data.x))
    assert first.nb_classes == NB_CLASSES


@pytest.mark.parametrize("architecture, shape, arch_params", [
    ("timm:resnet18", (3, 32, 32), {}),
    ("torchvision:resnet18", (3, 32, 32), {}),
    ("resnet18", (1, 28, 28), {}),
    ("conv3", (3, 32, 32), {"width": 4}),
    ("stealcheck.adapters.networks:mlp", (1, 8, 8), {"hidden": [5]}),  # a user 'package.module:callable'
])
def test_architectures_build_for_the_declared_input(architecture, shape, arch_params):
    import torch

    from stealcheck.adapters.networks import build_network

    net = build_network(architecture, shape, 7, arch_params)
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("architecture, message", [
    ("timm:resnet81", "Did you mean 'resnet18'"),
    ("torchvision:resnet81", "Did you mean 'resnet18'"),
    ("conv4", "Did you mean 'conv3'"),
    ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
])
def test_unknown_architectures_are_scenario_errors(architecture, message):
    from stealcheck.adapters.networks import build_network

    with pytest.raises(ScenarioError, match=message):
        build_network(architecture, (3, 32, 32), 10)


def test_bad_arch_params_are_scenario_errors():
    from stealcheck.adapters.networks import build_network

    with pytest.raises(ScenarioError, match="does not accept the keyword 'widht'"):
        build_network("conv3", (1, 28, 28), 10, {"widht": 8})
