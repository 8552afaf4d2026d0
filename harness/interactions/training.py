"""Training-time variants of the victim: plain, DP-SGD (Opacus), adversarial training (ART), a watermark's
trigger set (the ownership family's embedding), and any combination of them, with one recipe.

Every variant trains the same way, so that only the defences differ: ART's ``PyTorchClassifier`` fits
batches drawn by :class:`MixedBatches` (Adam at the recipe's learning rate, ``steps`` batches):

- the watermark's trigger set (``TrainingEmbedding`` of :mod:`stealcheck.ownership`) is mixed into each
  batch at the embedding's share. Under DP-SGD the trigger samples are ordinary records of the data set
  instead and batches are drawn uniformly, since that is what the accountant's epsilon assumes;
- DP-SGD: Opacus' ``PrivacyEngine.make_private`` wraps the network (per-sample gradients) and the
  optimiser (clipping, noise, accounting); with ``target_epsilon`` the noise multiplier comes from
  ``opacus.accountants.utils.get_noise_multiplier`` for the recipe's sampling rate and steps. Batches
  are fixed-size shuffles, not Poisson samples (Opacus' ``poisson_sampling=False``): the reported epsilon
  is the accountant's figure for that sampling rate, as is usual practice;
- adversarial training: ART's ``AdversarialTrainer`` with ``ProjectedGradientDescent`` on the same
  classifier (``fit_generator``). Under DP-SGD the classifier switches Opacus' per-sample hooks off while
  PGD takes input gradients (:class:`_PrivateClassifier`), so only the training step is clipped and noised.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from art.data_generators import DataGenerator

from stealcheck.ownership.base import TrainingEmbedding


class DPSGD:
    """DP-SGD through Opacus (the training registry's implementation: its params)."""

    def __init__(self, params: Any):
        self.params = params


class AdversarialTraining:
    """Adversarial training through ART's AdversarialTrainer with PGD (its params)."""

    def __init__(self, params: Any):
        self.params = params


class MixedBatches(DataGenerator):
    """ART data generator: batches of the training data, each with ``embedding.batch_share`` from the
    embedding's samples (or, ``uniform``, drawn from their union); ``steps`` batches make one epoch.
    Labels are one-hot."""

    def __init__(self, x: np.ndarray, y: np.ndarray, nb_classes: int, batch_size: int, steps: int, seed: int,
                 embedding: TrainingEmbedding | None = None, uniform: bool = False):
        self.rng = np.random.default_rng(seed)
        self.nb_classes = nb_classes
        if embedding is not None and uniform:
            x, y = np.concatenate([x, embedding.x]), np.concatenate([y, embedding.y])
            embedding = None
        self.x, self.y, self.embedding = x, np.asarray(y, dtype=np.int64), embedding
        self._order: np.ndarray = np.empty(0, dtype=np.int64)
        super().__init__(size=steps * batch_size, batch_size=batch_size)

    def _next(self, n: int) -> np.ndarray:
        """The next ``n`` indices of shuffled passes over the data (each sample once per pass)."""
        while len(self._order) < n:
            self._order = np.concatenate([self._order, self.rng.permutation(len(self.x))])
        out, self._order = self._order[:n], self._order[n:]
        return out

    def get_batch(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.batch_size
        e = self.embedding
        if e is None:
            i = self._next(n)
            xb, yb = self.x[i], self.y[i]
        else:
            n_emb = max(1, int(round(n * e.batch_share)))
            i = self._next(n - n_emb)
            j = self.rng.integers(0, len(e.x), n_emb)
            xb, yb = np.concatenate([self.x[i], e.x[j]]), np.concatenate([self.y[i], e.y[j]])
        onehot = np.zeros((len(yb), self.nb_classes), dtype=np.float32)
        onehot[np.arange(len(yb)), yb] = 1.0
        return np.ascontiguousarray(xb, dtype=np.float32), onehot


def _classifier(model: Any, optimizer: Any, input_shape, nb_classes: int, clip_values, private: bool) -> Any:
    """ART's PyTorchClassifier on ``model`` (logits), trained with ``optimizer``; under DP-SGD a subclass
    whose input gradients bypass Opacus' per-sample hooks."""
    import torch.nn as nn
    from art.estimators.classification import PyTorchClassifier

    class _PrivateClassifier(PyTorchClassifier):
        """PyTorchClassifier over an Opacus GradSampleModule: PGD's input gradients (``loss_gradient``) run
        with the per-sample hooks off, so they neither need nor leave per-sample gradients."""

        def loss_gradient(self, x, y, training_mode: bool = False, **kwargs):
            gsm = model
            gsm.disable_hooks()
            try:
                return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
            finally:
                gsm.enable_hooks()

    cls = _PrivateClassifier if private else PyTorchClassifier
    return cls(model=model, loss=nn.CrossEntropyLoss(), optimizer=optimizer, input_shape=tuple(input_shape),
               nb_classes=nb_classes, clip_values=tuple(clip_values), device_type="cpu")


def train_variant(net: Any, x: np.ndarray, y: np.ndarray, *, nb_classes: int, input_shape, clip_values,
                  steps: int, batch_size: int, lr: float, seed: int, dp: Any = None, adversarial: Any = None,
                  embedding: TrainingEmbedding | None = None) -> dict:
    """Train ``net`` (logits out, freshly initialised) in place with the given defences; returns what the
    run records: seconds, the noise multiplier and epsilon (DP-SGD), the samples trained on."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # ART's AdversarialTrainer and PGD's random start draw from numpy's global RNG
    start = time.perf_counter()
    batches = MixedBatches(x, y, nb_classes, batch_size, steps, seed, embedding, uniform=dp is not None)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    model, engine, info = net, None, {}
    if dp is not None:
        from opacus import PrivacyEngine
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.validators import ModuleValidator

        problems = ModuleValidator.validate(net, strict=False)
        if problems:
            raise ValueError(f"DP-SGD (Opacus) cannot train this architecture: {problems[0]}")
        n = len(batches.x)
        # the loader only tells Opacus the sampling rate (the batches come from MixedBatches): drop_last makes its
        # 1 / len(loader) the rate batch_size / n that the accountant is given here
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(n, 1)), batch_size=batch_size,
                                             drop_last=True)
        sample_rate = 1.0 / len(loader)
        noise = dp.noise_multiplier
        if dp.target_epsilon is not None:
            noise = get_noise_multiplier(target_epsilon=dp.target_epsilon, target_delta=dp.delta,
                                         sample_rate=sample_rate, steps=steps, accountant=dp.accountant)
        engine = PrivacyEngine(accountant=dp.accountant)
        model, optimizer, _ = engine.make_private(module=net, optimizer=optimizer, data_loader=loader,
                                                  noise_multiplier=float(noise), max_grad_norm=dp.max_grad_norm,
                                                  poisson_sampling=False)
        info.update({"noise_multiplier": float(noise), "sample_rate": sample_rate, "dp_records": n})
    classifier = _classifier(model, optimizer, input_shape, nb_classes, clip_values, private=dp is not None)
    if adversarial is not None:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.defences.trainer import AdversarialTrainer

        pgd = ProjectedGradientDescent(classifier, norm=np.inf, eps=adversarial.eps, eps_step=adversarial.eps_step,
                                       max_iter=adversarial.max_iter, num_random_init=1, batch_size=batch_size,
                                       verbose=False)
        AdversarialTrainer(classifier, attacks=pgd, ratio=adversarial.ratio).fit_generator(batches, nb_epochs=1)
    else:
        # what ART's generic fit_generator does (one fit per batch), without its progress bar, which it cannot
        # turn off and which would cut through the run's own progress display
        for _ in range(steps):
            xb, yb = batches.get_batch()
            classifier.fit(xb, yb, nb_epochs=1, batch_size=batch_size, verbose=False)
    net.eval()
    if engine is not None:
        info["epsilon"] = float(engine.get_epsilon(dp.delta))
        info["delta"] = dp.delta
    info.update({"train_seconds": round(time.perf_counter() - start, 2), "steps": steps,
                 "train_samples": int(len(x)), "embedded_samples": int(len(embedding.x)) if embedding else 0})
    return info


__all__ = ["DPSGD", "AdversarialTraining", "MixedBatches", "train_variant"]
