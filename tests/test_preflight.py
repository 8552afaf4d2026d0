"""check_inputs: what run would reject before training is caught at validate, cheaply, with the key path.

One test per class of problem (files, npz/csv/image-folder contents, pickles, weights, user code,
built-in architectures, input shape vs data, nb_classes vs labels, sklearn model_params), plus the
shipped scenarios passing and the run-time loaders giving the same messages with their key path.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from stealcheck.errors import ScenarioError
from stealcheck.preflight import check_inputs
from stealcheck.scenario import load_scenario

from conftest import tiny_scenario

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))
DIGITS = {"victim_train": {"source": "digits", "split": "train"}, "test": {"source": "digits", "split": "test"},
          "attacker": {"source": "digits"}}


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    """User architectures put the scenario's folder on sys.path; keep that inside each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def _check(write_yaml, **overrides):
    check_inputs(load_scenario(write_yaml(tiny_scenario(**overrides))))


def _problem(write_yaml, **overrides) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        _check(write_yaml, **overrides)
    return info.value


def _data(role: str = "victim_train", **spec) -> dict:
    data = {k: dict(v) for k, v in DIGITS.items()}
    data[role] = spec
    return data


def _torch_victim(**keys) -> dict:
    return {"kind": "torch", "architecture": "mlp", "input": {"shape": [1, 8, 8]}, **keys}


def _sklearn_victim(**keys) -> dict:
    return {"kind": "sklearn", "model": "logistic_regression", "input": {"shape": [13]}, **keys}


WINE = {"victim_train": {"source": "sklearn", "name": "wine", "split": "train"},
        "test": {"source": "sklearn", "name": "wine", "split": "test"},
        "attacker": {"source": "uniform", "size": 1000}}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenarios_pass(path):
    check_inputs(load_scenario(path))


def test_check_inputs_imports_nothing_heavy_for_builtins():
    probe = ("import sys\nfrom stealcheck.scenario import load_scenario\nfrom stealcheck.preflight import check_inputs\n"
             f"for p in {[str(p) for p in SCENARIOS]!r}:\n    check_inputs(load_scenario(p))\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'torch', 'art', 'sklearn', 'pandas', 'scipy', 'torchvision', 'timm'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- files


def test_missing_file_is_named_with_its_resolved_path(write_yaml, tmp_path):
    err = _problem(write_yaml, data=_data(source="npz", path="nope/data.npz"))
    assert err.path == "data.victim_train.path"
    assert f"npz file not found: {tmp_path / 'nope' / 'data.npz'}" in err.message
    assert "relative paths are taken from the scenario file's folder" in err.message


def test_folder_where_a_file_belongs(write_yaml, tmp_path):
    (tmp_path / "adir").mkdir()
    err = _problem(write_yaml, data=_data(source="npz", path="adir"))
    assert err.path == "data.victim_train.path" and "is a folder; a file is expected" in err.message


def test_dev_null_and_empty_files(write_yaml, tmp_path):
    err = _problem(write_yaml, data=_data(source="csv", path="/dev/null"))
    assert err.path == "data.victim_train.path" and "not a regular file" in err.message
    (tmp_path / "empty.npz").write_bytes(b"")
    err = _problem(write_yaml, data=_data("test", source="npz", path="empty.npz"))
    assert err.path == "data.test.path" and "is empty" in err.message


def test_npz_random_bytes_and_npy(write_yaml, tmp_path):
    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(0).bytes(512))
    err = _problem(write_yaml, data=_data(source="npz", path="junk.npz"))
    assert "is not an npz file" in err.message and err.path == "data.victim_train.path"
    np.save(tmp_path / "one.npy", np.zeros((4, 64)))
    err = _problem(write_yaml, data=_data(source="npz", path="one.npy"))
    assert "is a .npy file" in err.message and "np.savez" in err.message


def test_npz_keys_objects_and_lengths(write_yaml, tmp_path):
    np.savez(tmp_path / "a.npz", inputs=np.zeros((10, 64)), y=np.zeros(10, dtype=int))
    err = _problem(write_yaml, data=_data(source="npz", path="a.npz"))
    assert err.path == "data.victim_train.x_key"
    assert "has no array 'x'" in err.message and "It has: inputs, y" in err.message

    np.savez(tmp_path / "b.npz", x=np.zeros((10, 8, 8)), y=np.zeros(7, dtype=int))
    err = _problem(write_yaml, data=_data(source="npz", path="b.npz"))
    assert "10 inputs but 7 labels" in err.message and err.path == "data.victim_train.path"

    np.savez(tmp_path / "c.npz", x=np.array([{"a": 1}] * 10, dtype=object), y=np.zeros(10, dtype=int))
    err = _problem(write_yaml, data=_data(source="npz", path="c.npz"))
    assert "holds Python objects (dtype object)" in err.message and "allow_pickle=False" in err.message

    np.savez(tmp_path / "d.npz", x=np.array(["a"] * 10), y=np.zeros(10, dtype=int))
    err = _problem(write_yaml, data=_data(source="npz", path="d.npz"))
    assert "not numbers" in err.message


def test_a_good_npz_passes_without_loading_the_inputs(write_yaml, tmp_path, monkeypatch):
    from stealcheck.adapters import data as data_module

    np.savez_compressed(tmp_path / "ok.npz", x=np.zeros((40, 8, 8), dtype=np.uint8), y=np.arange(40) % 4)
    loaded: list[str] = []
    real = data_module._npz_arrays
    monkeypatch.setattr(data_module, "_npz_arrays", lambda file, keys, at: loaded.extend(keys) or real(file, keys, at))
    _check(write_yaml, data=_data(source="npz", path="ok.npz"))
    assert loaded and "x" not in loaded  # the labels are read (they are small), the inputs only by their header


def test_csv_columns_numbers_and_binary(write_yaml, tmp_path):
    (tmp_path / "a.csv").write_text("f1,f2,target\n0.1,0.2,0\n")
    victim = _sklearn_victim(input={"shape": [2]})
    err = _problem(write_yaml, victim=victim, data=_data(source="csv", path="a.csv"))
    assert err.path == "data.victim_train.label"
    assert "has no column 'label'" in err.message and "Columns: f1, f2, target" in err.message

    (tmp_path / "b.csv").write_text("f1,f2,label\n0.1,0.2,0\n0.3,abc,1\n")
    err = _problem(write_yaml, victim=victim, data=_data(source="csv", path="b.csv"))
    assert "line 3: the feature 'f2' is 'abc', not a number" in err.message

    (tmp_path / "c.csv").write_bytes(b"\x00\x01\x02garbage\xff" * 20)
    err = _problem(write_yaml, victim=victim, data=_data(source="csv", path="c.csv"))
    assert "not a text CSV file" in err.message and err.path == "data.victim_train.path"

    (tmp_path / "d.csv").write_text("f1,f2,label\n0.1,0.2,0\n")
    err = _problem(write_yaml, victim=victim, data=_data(source="csv", path="d.csv", features=["f1", "f3"]))
    assert err.path == "data.victim_train.features" and "f3" in err.message


def test_imagefolder_file_empty_and_classless(write_yaml, tmp_path):
    (tmp_path / "img.png").write_bytes(b"not really")
    err = _problem(write_yaml, data=_data(source="imagefolder", path="img.png"))
    assert err.path == "data.victim_train.path" and "is a file; a folder is expected" in err.message
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"x")
    err = _problem(write_yaml, data=_data(source="imagefolder", path="flat"))
    assert "has no class sub-folders" in err.message
    (tmp_path / "tree" / "cat").mkdir(parents=True)
    (tmp_path / "tree" / "dog").mkdir()
    (tmp_path / "tree" / "cat" / "1.png").write_bytes(b"x")
    (tmp_path / "tree" / "dog" / "notes.txt").write_text("x")
    err = _problem(write_yaml, data=_data(source="imagefolder", path="tree"))
    assert "dog hold no image files" in err.message


def test_torchvision_root_must_be_a_folder(write_yaml):
    err = _problem(write_yaml, data=_data(source="torchvision", name="MNIST", root="no_root"))
    assert err.path == "data.victim_train.root" and "torchvision root not found" in err.message


# ---------------------------------------------------------------- pickles


def test_pickle_without_trust_is_refused_at_validate(write_yaml, tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04 not unpickled at validate")
    err = _problem(write_yaml, victim=_sklearn_victim(path="model.pkl"), data=WINE)
    assert err.path == "victim.trust_pickle"
    assert str(tmp_path / "model.pkl") in err.message and "runs code from the file" in err.message
    assert "trust_pickle: true" in err.message
    # trusted: checked to be a file, never unpickled here
    _check(write_yaml, victim=_sklearn_victim(path="model.pkl", trust_pickle=True), data=WINE)
    err = _problem(write_yaml, victim=_sklearn_victim(path="gone.pkl", trust_pickle=True), data=WINE)
    assert err.path == "victim.path" and "model file not found" in err.message


# ---------------------------------------------------------------- weights


def _save_state(tmp_path, name: str, architecture: str, shape, nb_classes: int, arch_params=None) -> str:
    import torch

    from stealcheck.adapters.networks import build_network

    net = build_network(architecture, tuple(shape), nb_classes, arch_params or {})
    torch.save(net.state_dict(), tmp_path / name)
    return name


def test_weights_are_read_and_compared_with_the_architecture(write_yaml, tmp_path):
    good = _save_state(tmp_path, "good.pt", "mlp", (1, 8, 8), 10)
    _check(write_yaml, victim=_torch_victim(weights=good, nb_classes=10))

    err = _problem(write_yaml, victim=_torch_victim(weights=good))
    assert err.path == "victim.nb_classes" and "required when weights are given" in err.message

    (tmp_path / "junk.pt").write_bytes(b"random bytes, not a zip")
    err = _problem(write_yaml, victim=_torch_victim(weights="junk.pt", nb_classes=10))
    assert err.path == "victim.weights"
    assert "is not a state_dict readable with torch.load(weights_only=True)" in err.message

    err = _problem(write_yaml, victim=_torch_victim(weights=good, nb_classes=10, arch_params={"hidden": [32]}))
    assert err.path == "victim.weights" and "shape mismatches" in err.message and "[32, 64]" in err.message

    other = _save_state(tmp_path, "conv.pt", "conv3", (1, 8, 8), 10, {"width": 4})
    err = _problem(write_yaml, victim=_torch_victim(weights=other, nb_classes=10))
    assert "missing keys (2): 1.weight, 1.bias;" in err.message
    assert "unexpected keys (6): 0.weight, 0.bias, 6.weight" in err.message
    assert "3.weight: file [8, 4, 3, 3] vs network [10, 64]" in err.message

    err = _problem(write_yaml, victim=_torch_victim(weights="none.pt", nb_classes=10))
    assert err.path == "victim.weights" and "weights file not found" in err.message


# ---------------------------------------------------------------- user code


def _user_module(tmp_path: Path, source: str) -> str:
    name = f"usernets_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source)
    return name


NETS = """
import torch.nn as nn

def lenet(num_classes, in_channels=1, dropout=0.0):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))

def needs_depth(nb_classes, depth):
    return nn.Linear(2, nb_classes)

def flexible(**kw):
    assert "input_shape" in kw and "nb_classes" in kw
    return nn.Sequential(nn.Flatten(), nn.Linear(64, kw["nb_classes"]))

NOT_CALLABLE = 3
"""


def test_user_module_next_to_the_scenario_with_num_classes(write_yaml, tmp_path):
    mod = _user_module(tmp_path, NETS)
    _check(write_yaml, victim=_torch_victim(architecture=f"{mod}:lenet", arch_params={"dropout": 0.1}))
    _check(write_yaml, victim=_torch_victim(architecture=f"{mod}:flexible"))


def test_user_callable_gets_the_keywords_its_signature_names(tmp_path, monkeypatch):
    from stealcheck.adapters.networks import build_network

    mod = _user_module(tmp_path, NETS)
    net = build_network(f"{mod}:lenet", (3, 8, 8), 7, {"dropout": 0.5}, base_dir=tmp_path)
    assert net[0].in_channels == 3
    import torch

    assert net(torch.zeros(2, 3, 8, 8)).shape == (2, 7)
    assert build_network(f"{mod}:flexible", (1, 8, 8), 5, base_dir=tmp_path)[1].out_features == 5


def test_user_code_errors_name_the_keyword(write_yaml, tmp_path):
    mod = _user_module(tmp_path, NETS)
    err = _problem(write_yaml, victim=_torch_victim(architecture=f"{mod}:lenet", arch_params={"width": 8}))
    assert err.path == "victim.arch_params.width"
    assert (f"{mod}:lenet does not accept the keyword 'width' given in arch_params. It accepts: num_classes, "
            "in_channels, dropout.") in err.message

    err = _problem(write_yaml, victim=_torch_victim(architecture=f"{mod}:needs_depth"))
    assert err.path == "victim.architecture" and "required parameter 'depth'" in err.message

    err = _problem(write_yaml, victim=_torch_victim(architecture=f"{mod}:lenett"))
    assert err.path == "victim.architecture" and "has no attribute 'lenett'. Did you mean 'lenet'?" in err.message

    err = _problem(write_yaml, victim=_torch_victim(architecture=f"{mod}:NOT_CALLABLE"))
    assert "not a callable" in err.message

    err = _problem(write_yaml, victim=_torch_victim(architecture="no_such_pkg_xyz.nets:lenet"))
    assert err.path == "victim.architecture"
    assert err.message.startswith("cannot import module 'no_such_pkg_xyz.nets' (from victim.architecture): "
                                  "ModuleNotFoundError:")

    broken = _user_module(tmp_path, "raise RuntimeError('boom at import')\n")
    err = _problem(write_yaml, victim=_torch_victim(architecture=f"{broken}:net"))
    assert "RuntimeError: boom at import" in err.message


def test_thief_architecture_is_checked_at_its_own_path(write_yaml, tmp_path):
    thief = {"architecture": "conv_3", "min_steps": 20, "max_steps": 40}
    err = _problem(write_yaml, thief=thief)
    assert err.path == "thief.architecture" and "Did you mean 'conv3'?" in err.message
    err = _problem(write_yaml, thief={"arch_params": {"hidden": [0]}})
    assert err.path == "thief.arch_params.hidden"
    err = _problem(write_yaml, victim=_sklearn_victim(), data=WINE, thief={"architecture": "conv3"})
    assert err.path == "thief.architecture" and "needs an image input shape" in err.message


# ---------------------------------------------------------------- built-in architectures


@pytest.mark.parametrize("keys, path, text", [
    ({"architecture": "conv_3"}, "victim.architecture", "unknown architecture 'conv_3'. Did you mean 'conv3'?"),
    ({"architecture": "conv3", "arch_params": {"width": -1}}, "victim.arch_params.width", "greater than 0"),
    ({"architecture": "conv3", "arch_params": {"widht": 8}}, "victim.arch_params.widht",
     "conv3 does not accept the keyword 'widht' given in arch_params. Did you mean 'width'? It accepts: width."),
    ({"arch_params": {"hidden": [0]}}, "victim.arch_params.hidden", "positive integer"),
    ({"architecture": "resnet18", "arch_params": {"depth": 3}}, "victim.arch_params.depth", "takes no arch_params"),
    ({"architecture": "conv3", "input": {"shape": [1, 4, 4]}}, "victim.architecture", "at least 8x8"),
])
def test_builtin_architecture_params(write_yaml, keys, path, text):
    err = _problem(write_yaml, victim={**_torch_victim(), **keys})
    assert err.path == path
    assert text in err.message


def test_networks_validate_with_the_same_models():
    """build_network rejects what validate rejects, with the same message and key path (one source of truth)."""
    import inspect

    from stealcheck.adapters import architectures, networks

    for name, spec in architectures.BUILTIN_ARCHITECTURES.items():
        fn = networks.BUILTIN_ARCHITECTURES[name]
        keywords = {k: p.default for k, p in list(inspect.signature(fn).parameters.items())[2:]}
        fields = {k: f.default for k, f in spec.params.model_fields.items()}
        assert keywords == fields, name
    with pytest.raises(ScenarioError) as info:
        networks.build_network("conv3", (1, 28, 28), 10, {"width": -1}, section="thief")
    assert info.value.path == "thief.arch_params.width"


# ---------------------------------------------------------------- data shape and classes


def test_tabular_features_must_match_the_input_shape(write_yaml, tmp_path):
    err = _problem(write_yaml, victim={"kind": "sklearn"}, data=WINE)
    assert err.path == "victim.input.shape"
    assert err.message == ("data.victim_train (sklearn 'wine') has 13 features but victim.input.shape is [4]; "
                           "set input: {shape: [13]}.")
    (tmp_path / "t.csv").write_text("a,b,c,label\n" + "".join(f"{i},1,2,{i % 2}\n" for i in range(20)))
    err = _problem(write_yaml, victim=_sklearn_victim(), data={**WINE, "test": {"source": "csv", "path": "t.csv"}})
    assert "data.test (CSV t.csv) has 3 features but victim.input.shape is [13]" in err.message
    np.savez(tmp_path / "t.npz", x=np.zeros((20, 5)), y=np.arange(20) % 2)
    err = _problem(write_yaml, victim=_sklearn_victim(), data={**WINE, "test": {"source": "npz", "path": "t.npz"}})
    assert "has 5 features" in err.message


def test_image_sources_need_an_image_input(write_yaml):
    err = _problem(write_yaml, victim=_sklearn_victim(input={"shape": [64]}))
    assert err.path == "victim.input.shape" and "data.victim_train (digits) holds images" in err.message


def test_nb_classes_must_cover_the_labels(write_yaml, tmp_path):
    err = _problem(write_yaml, victim=_torch_victim(nb_classes=5))
    assert err.path == "victim.nb_classes" and "go up to 9 (10 distinct)" in err.message
    np.savez(tmp_path / "l.npz", x=np.zeros((36, 8, 8)), y=np.arange(36) % 12)
    err = _problem(write_yaml, victim=_torch_victim(nb_classes=10), data=_data("test", source="npz", path="l.npz"))
    assert err.path == "victim.nb_classes" and "data.test" in err.message


def test_labels_and_splits_from_files(write_yaml, tmp_path):
    np.savez(tmp_path / "neg.npz", x=np.zeros((10, 8, 8)), y=np.arange(10) - 1)
    err = _problem(write_yaml, data=_data(source="npz", path="neg.npz"))
    assert "negative labels" in err.message
    np.savez(tmp_path / "one.npz", x=np.zeros((10, 8, 8)), y=np.r_[np.zeros(9, int), 1])
    err = _problem(write_yaml, data=_data(source="npz", path="one.npz", split="train"))
    assert err.path == "data.victim_train.split" and "single sample" in err.message


def test_file_pool_smaller_than_the_budget(write_yaml, tmp_path):
    np.savez(tmp_path / "pool.npz", x=np.zeros((60, 8, 8)), y=np.arange(60) % 3)
    err = _problem(write_yaml, data=_data("attacker", source="npz", path="pool.npz"), budgets=[50, 100])
    assert err.path == "budgets" and "holds 60 samples" in err.message


# ---------------------------------------------------------------- sklearn model_params


def test_sklearn_model_params(write_yaml):
    err = _problem(write_yaml, victim=_sklearn_victim(model_params={"max_iters": 10}), data=WINE)
    assert err.path == "victim.model_params.max_iters" and "Did you mean 'max_iter'?" in err.message
    err = _problem(write_yaml, victim=_sklearn_victim(model_params={"C": -1.0}), data=WINE)
    assert err.path == "victim.model_params.C" and "invalid model_params for LogisticRegression" in err.message
    _check(write_yaml, victim=_sklearn_victim(model="svc", model_params={"C": 2.0}), data=WINE)


# ---------------------------------------------------------------- run time


def test_loaders_give_the_same_message_with_the_roles_key_path(tmp_path):
    from dataclasses import dataclass

    from stealcheck.adapters.data import NpzParams, npz
    from stealcheck.datasets import DataContext

    @dataclass(frozen=True)
    class RoleContext(DataContext):  # what the runner passes once DataContext carries the role
        role: str | None = None

    np.savez(tmp_path / "b.npz", x=np.zeros((10, 64)), y=np.zeros(7, dtype=int))
    ctx = RoleContext((64,), (0.0, 1.0), 0, str(tmp_path), role="attacker")
    with pytest.raises(ScenarioError) as info:
        npz(NpzParams(path="b.npz"), ctx)
    assert info.value.path == "data.attacker.path" and "10 inputs but 7 labels" in info.value.message
    np.savez(tmp_path / "g.npz", x=np.zeros((10, 64), np.uint8), y=np.arange(10) % 2)
    ds = npz(NpzParams(path="g.npz"), ctx)
    assert ds.x.shape == (10, 64) and sorted(ds.y) == [0] * 5 + [1] * 5
