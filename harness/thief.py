"""The attacker's substitute model: an ART PyTorchClassifier trained on soft labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from art.estimators.classification import PyTorchClassifier

from stealcheck.adapters.networks import build_network, fit_network, one_cycle_train, one_hot, train_steps

from .augment import gaussian_jitter, is_image_shape, random_affine
from .scenario import ThiefSpec
from .seeds import derive_seed


class ThiefClassifier(PyTorchClassifier):
    """ART ``PyTorchClassifier`` whose ``fit`` learns from the victim's probability vectors.

    ART's ``PyTorchClassifier.fit`` reduces probability targets to class indices for
    ``CrossEntropyLoss``, and a thief trained that way on a few hundred queries barely learns.
    This subclass keeps ART's interface (attacks call ``fit(x, y, batch_size, nb_epochs)``) but
    trains the logits with soft cross-entropy on a step-based one-cycle schedule:
    ``nb_epochs`` passes clipped to the spec's [min_steps, max_steps]. ``predict`` returns logits.

    Recipe options (``thief.augment``, ``thief.unlabelled``) train on augmented queried images and on
    the unqueried pool without labels (:meth:`attach_pool`); neither ever queries the victim. Measured
    against the conv3 MNIST victim with the digits pool (random KnockoffNets, width 16, 50 epochs in
    [300, 1500] steps, fidelity at 500 / 1,500 queries, one seed): plain 0.812 / 0.889; augment 0.791 /
    0.846; augment + pseudo_label 0.778 / 0.817; augment + consistency 0.797 / 0.832; augment + mixup
    0.787 / 0.830; mixup alone 0.751 / 0.799; consistency (weight 0.3) alone 0.810 / 0.850. The victim is
    not invariant to the shifts and turns, and fidelity is agreement with the victim, so both stay off by
    default; they are there to measure, for other victims and pools, whether they help.
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
        self.pool_x: np.ndarray | None = None  # the attacker's pool, for thief.unlabelled (attach_pool)
        self.unlabelled_used = 0  # unqueried pool samples the last fit trained on without labels

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
        seed = derive_seed(self.seed, self.fit_calls, "thief fit")
        progress = self.progress and steps > 1
        if steps > 1 and (self.spec.augment or self.spec.unlabelled is not None):
            self._fit_recipe(np.asarray(x, dtype=np.float32), y_soft, steps, batch_size, seed, progress)
        else:
            fit_network(self.net, x, y_soft, steps=steps, batch_size=batch_size, lr=self.spec.lr, seed=seed,
                        desc="thief", progress=progress)
        self.steps_trained += steps

    def attach_pool(self, x_pool: np.ndarray) -> "ThiefClassifier":
        """The attacker's proxy pool, for ``thief.unlabelled``: at each ``fit`` the pool samples that are
        not among the trained (queried) inputs are used without labels. The thief never queries."""
        self.pool_x = np.asarray(x_pool, dtype=np.float32)
        return self

    def unqueried(self, x: np.ndarray) -> np.ndarray | None:
        """The attached pool's samples that are not rows of ``x`` (compared byte for byte)."""
        if self.pool_x is None:
            return None
        asked = {row.tobytes() for row in np.asarray(x, dtype=np.float32)}
        keep = np.fromiter((row.tobytes() not in asked for row in self.pool_x), dtype=bool, count=len(self.pool_x))
        return self.pool_x[keep]

    def extra_metrics(self) -> dict[str, float]:
        """Per checkpoint (when ``thief.unlabelled`` is on): how many unqueried pool samples the last fit used."""
        if self.spec.unlabelled is None:
            return {}
        return {"unlabelled_pool_samples": float(self.unlabelled_used)}

    def _fit_recipe(self, x: np.ndarray, y_soft: np.ndarray, steps: int, batch_size: int, seed: int,
                    progress: bool) -> None:
        """``fit_network``'s soft cross-entropy, with augmented queried images (``thief.augment``) and a
        label-free loss on the unqueried pool (``thief.unlabelled``)."""
        spec, net = self.spec, self.net
        image = is_image_shape(self.input_shape)
        gen = torch.Generator().manual_seed(int(seed))
        rng = np.random.default_rng(seed)
        xt = torch.from_numpy(np.ascontiguousarray(x))
        yt = torch.from_numpy(np.ascontiguousarray(y_soft, dtype=np.float32))
        bs = min(batch_size, len(xt))
        un = spec.unlabelled
        pool = self.unqueried(x) if un is not None else None
        self.unlabelled_used = 0 if pool is None else len(pool)
        pool_t = torch.from_numpy(pool) if pool is not None and len(pool) else None
        lo, hi = self.clip_values
        jitter = 0.05 * (hi - lo)

        def view(xb: torch.Tensor) -> torch.Tensor:
            # a perturbed view: the image augmentation, or Gaussian jitter for flat inputs
            return random_affine(xb, gen) if image else gaussian_jitter(xb, gen, jitter, lo, hi)

        def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()

        def batch_loss() -> torch.Tensor:
            idx = torch.randint(0, len(xt), (bs,), generator=gen)
            xb, yb = xt[idx], yt[idx]
            if spec.augment and image:
                xb = random_affine(xb, gen)
            if pool_t is None:
                return soft_ce(net(xb), yb)
            ub = pool_t[torch.randint(0, len(pool_t), (bs,), generator=gen)]
            if un.method == "mixup":
                with torch.no_grad():
                    guess = torch.softmax(net(ub), dim=1) ** (1.0 / un.temperature)
                    guess = guess / guess.sum(dim=1, keepdim=True)
                lam = float(rng.beta(un.alpha, un.alpha))
                lam = max(lam, 1.0 - lam)  # the queried sample dominates its mix
                return soft_ce(net(xb), yb) + un.weight * soft_ce(net(lam * xb + (1 - lam) * ub),
                                                                  lam * yb + (1 - lam) * guess)
            loss = soft_ce(net(xb), yb)
            with torch.no_grad():
                target = torch.softmax(net(ub if un.method == "pseudo_label" else view(ub)), dim=1)
            logits = net(view(ub))
            if un.method == "pseudo_label":
                confidence, label = target.max(dim=1)
                mask = (confidence >= un.threshold).float()
                return loss + un.weight * (F.cross_entropy(logits, label, reduction="none") * mask).mean()
            return loss + un.weight * soft_ce(logits, target)  # consistency

        net.train()
        one_cycle_train(net.parameters(), steps=steps, lr=spec.lr, batch_loss=batch_loss, desc="thief",
                        progress=progress)
        net.eval()

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
