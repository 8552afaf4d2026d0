"""Shared fixtures: an isolated cache, a tiny scenario builder, fake victims and oracles.

Every test runs with ``STEALCHECK_CACHE_DIR`` pointing into a temporary folder, so the suite
never reads or writes ``~/.cache``. Torch runs single-threaded: on a small (2-core, shared)
machine, tiny networks train many times faster with one thread, and results stay comparable
between runs made in this process.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

# Before torch is imported anywhere (the runner also leaves the thread count alone when this is set).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import yaml


@pytest.fixture(scope="session", autouse=True)
def _single_thread_torch():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """A fresh cache folder for every test; ~/.cache is never touched."""
    d = tmp_path_factory.mktemp("stealcheck-cache")
    monkeypatch.setenv("STEALCHECK_CACHE_DIR", str(d))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return d


# ---------------------------------------------------------------- scenarios

TINY_SCENARIO: dict[str, Any] = {
    "name": "tiny",
    "victim": {"kind": "torch", "architecture": "mlp", "input": {"shape": [1, 8, 8]}, "train": {"steps": 150}},
    "data": {
        "victim_train": {"source": "digits", "split": "train"},
        "test": {"source": "digits", "split": "test"},
        "attacker": {"source": "digits", "split": "all"},
    },
    "thief": {"architecture": "mlp", "min_steps": 20, "max_steps": 40},
    "defences": ["none", "label_only"],
    "attacks": [{"knockoff": {"strategy": "random"}}, "copycat"],
    "budgets": [50, 100],
    "seeds": [0, 1],
    "evaluation": {"uniform_samples": 100},
}


def tiny_scenario(**overrides: Any) -> dict:
    """A deep copy of the tiny scenario with top-level sections replaced (None removes a section)."""
    data = copy.deepcopy(TINY_SCENARIO)
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.fixture
def scenario_dict() -> Callable[..., dict]:
    return tiny_scenario


@pytest.fixture
def write_yaml(tmp_path) -> Callable[..., Path]:
    """Write a dict (dumped as block YAML) or a raw YAML string to tmp_path/NAME; return the path."""

    def _write(content: dict | str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return path

    return _write


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line of ``text`` containing ``needle``."""
    seen = 0
    for i, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return i
    raise AssertionError(f"{needle!r} not found in the YAML text")


# ---------------------------------------------------------------- fake victims


class FakeVictim:
    """A deterministic linear-softmax 'victim' over flat inputs that counts its calls."""

    def __init__(self, nb_features: int = 4, nb_classes: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(nb_features, nb_classes)) * 3.0
        self.calls: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        z = np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ self.w
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def fake_victim() -> FakeVictim:
    return FakeVictim()


def network_outputs(net):
    """(logits, predict_proba) numpy functions of a PyTorch network (float64 outputs), for detector contexts."""
    import numpy as np
    import torch

    def logits(x):
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).double().numpy()

    def predict_proba(x):
        return torch.softmax(torch.from_numpy(logits(x)), dim=1).numpy()

    return logits, predict_proba


def make_oracle(predict, nb_features: int = 4, nb_classes: int = 3, **kwargs):
    from stealcheck.oracle import Oracle

    return Oracle(predict, (nb_features,), nb_classes, (0.0, 1.0), **kwargs)


# ---------------------------------------------------------------- a small real victim


@pytest.fixture(scope="session")
def mnist_victim(tmp_path_factory):
    """A conv3 (width 8) victim trained on the mnist5k train split, built once per test session.

    Returns (victim, test set, holdout set): 3,500 training digits, 1,000 test digits and 500
    held-out digits the victim never saw (in-distribution seeds for attacks such as JBDA).
    It reaches about 95% test accuracy in ~10 s on one core: weaker than the quickstart's
    victim, good enough to tell a working extraction from a broken one.
    """
    from stealcheck.adapters.data import SplitParams, mnist5k
    from stealcheck.adapters.torch_victim import TorchVictim, TorchVictimParams
    from stealcheck.cache import Cache
    from stealcheck.datasets import DataContext
    from stealcheck.victim import VictimContext

    ctx = DataContext((1, 28, 28), (0.0, 1.0), seed=0)
    parts = {k: mnist5k(SplitParams(split=k, holdout_fraction=0.1), ctx) for k in ("train", "test", "holdout")}
    params = TorchVictimParams(architecture="conv3", arch_params={"width": 8}, train={"steps": 400})
    vctx = VictimContext(load_data=lambda role: parts["train"], data_fingerprint=lambda role: "mnist5k-train",
                         cache=Cache(tmp_path_factory.mktemp("victim-cache")), seed=0, progress=False,
                         base_dir=Path("."))
    victim = TorchVictim.build(params, vctx)
    return victim, parts["test"], parts["holdout"]


@pytest.fixture(scope="session")
def digits_pool():
    """scikit-learn's 1,797 digits upscaled to 28x28: the natural proxy pool of the MNIST scenarios."""
    from stealcheck.adapters.data import DigitsParams, digits
    from stealcheck.datasets import DataContext

    return digits(DigitsParams(), DataContext((1, 28, 28), (0.0, 1.0), seed=0))
