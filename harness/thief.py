"""The attacker's substitute model: an ART PyTorchClassifier trained on soft labels."""

from __future__ import annotations

from typing import Any

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from art.estimators.classification import PyTorchClassifier

from stealcheck.adapters.networks import build_network, fit_network, one_hot, train_steps

from .scenario import ThiefSpec
from .seeds import derive_seed


class ThiefClassifier(PyTorchClassifier):
    """ART ``PyTorchClassifier`` whose ``fit`` learns from the victim's probability vectors.

    ART's ``PyTorchClassifier.fit`` reduces probability targets to class indices for
    ``CrossEntropyLoss``, and a thief trained that way on a few hundred queries barely learns.
    This subclass keeps ART's interface (attacks call ``fit(x, y, batch_size, nb_epochs)``) but
    trains the logits with soft cross-entropy on a step-based one-cycle schedule:
    ``nb_epochs`` passes clipped to the spec's [min_steps, max_steps]. ``predict`` returns logits.
    """

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], nb_classes: int,
                 clip_values: tuple[float, float], spec: ThiefSpec, seed: int, progress: bool = False):
        super().__init__(model=net, loss=nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
                         nb_classes=nb_classes, clip_values=clip_values, device_type="cpu")
        self.net = net
        self.spec = spec
        self.seed = seed
        self.progress = progress
        self.fit_calls = 0
        self.steps_trained = 0

    def fit(self, x: np.ndarray, y: np.ndarray, batch_size: int = 64, nb_epochs: int = 10, **kwargs: Any) -> None:
        y = np.asarray(y)
        if y.ndim == 1:
            y_soft = one_hot(y.astype(int), self.nb_classes)
        else:
            # top-k answers are not normalised (the rest is 0): make each target a distribution
            y_soft = y.astype(np.float32)
            sums = y_soft.sum(axis=1, keepdims=True)
            y_soft = np.where(sums > 0, y_soft / np.where(sums > 0, sums, 1), 1.0 / self.nb_classes)
        steps = train_steps(len(x), nb_epochs, batch_size, self.spec.min_steps, self.spec.max_steps)
        if len(x) < 2:  # single-sample online updates (adaptive KnockoffNets): one step, as ART does
            steps = 1
        self.fit_calls += 1
        fit_network(self.net, x, y_soft, steps=steps, batch_size=batch_size, lr=self.spec.lr,
                    seed=derive_seed(self.seed, self.fit_calls, "thief fit"), desc="thief", progress=self.progress and steps > 1)
        self.steps_trained += steps

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Softmax of the thief's logits."""
        logits = torch.from_numpy(np.asarray(self.predict(x.astype(np.float32), batch_size=batch_size)))
        return torch.softmax(logits.double(), dim=1).numpy()


def make_thief(spec: ThiefSpec, architecture: str, arch_params: dict, input_shape: tuple[int, ...],
               nb_classes: int, clip_values: tuple[float, float], seed: int, progress: bool = False,
               normalize: nn.Module | None = None, base_dir: str | Path | None = None) -> ThiefClassifier:
    """A freshly initialised thief (seeded); ``base_dir`` is the scenario's folder (user architectures)."""
    torch.manual_seed(seed)
    net = build_network(architecture, input_shape, nb_classes, arch_params, base_dir=base_dir, section="thief")
    if normalize is not None:
        net = nn.Sequential(normalize, net)
    return ThiefClassifier(net, input_shape, nb_classes, clip_values, spec, seed, progress)
