"""Outlier Exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019) as an extraction-query detector.

Also home of :func:`train_with_outliers`, the training loop OE and EDM share: the victim's own
recipe (Adam, one-cycle schedule, the same number of steps, batch size and peak learning rate as
:func:`stealcheck.adapters.networks.fit_network`) with an outlier batch drawn beside every
in-distribution batch.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, Field

from stealcheck.registry import PARAMS_CONFIG, detectors

from .detectors import Detector, DetectorContext, batched


class RetrainParams(BaseModel):
    """Training budget of a detector that retrains the victim; null = the victim's own recipe."""

    model_config = PARAMS_CONFIG
    steps: int | None = Field(None, gt=0, description="optimiser steps; null = the victim's recipe (victim.train.steps)")
    batch_size: int | None = Field(None, gt=0, description="in-distribution batch size; null = the victim's recipe")
    lr: float | None = Field(None, gt=0, description="peak learning rate (Adam, one-cycle); null = the victim's recipe")
    outlier_batch_size: int | None = Field(None, gt=0, description="outlier samples drawn beside each in-distribution "
                                           "batch; null = the same as batch_size")


def resolved_recipe(params: RetrainParams, ctx: DetectorContext) -> dict[str, Any]:
    """steps / batch_size / lr / outlier_batch_size: the params where given, else the victim's recipe."""
    recipe = dict(ctx.train_recipe)
    steps = params.steps or int(recipe.get("steps", 800))
    batch_size = params.batch_size or int(recipe.get("batch_size", 64))
    lr = params.lr or float(recipe.get("lr", 3e-3))
    return {"steps": steps, "batch_size": batch_size, "lr": lr,
            "outlier_batch_size": params.outlier_batch_size or batch_size}


def train_with_outliers(modules: list[Any], ctx: DetectorContext, recipe: dict[str, Any],
                        step_loss: Callable[[Any, Any, Any], Any], *, desc: str) -> float:
    """Train ``modules`` jointly: each step draws an in-distribution batch (x, y) from ``ctx.train``
    and an outlier batch from ``ctx.outliers`` and minimises ``step_loss(x, y, x_outlier)``.

    The loop is ``fit_network``'s (``one_cycle_train``): Adam over all parameters, one-cycle schedule
    peaking at ``lr``, batches drawn with replacement from a generator seeded with ``ctx.seed``. Returns the mean loss
    of the last 10% of steps. Modules are left in eval mode.
    """
    import torch

    from stealcheck.adapters.networks import one_cycle_train

    if ctx.train.y is None:
        raise ValueError("the victim's training data has no labels; a victim cannot be retrained on it")
    x_in = torch.from_numpy(np.ascontiguousarray(ctx.train.x, dtype=np.float32))
    y_in = torch.from_numpy(np.asarray(ctx.train.y, dtype=np.int64))
    x_out = torch.from_numpy(np.ascontiguousarray(ctx.outliers.x, dtype=np.float32))
    if len(x_in) == 0 or len(x_out) == 0:
        raise ValueError("retraining needs non-empty training and outlier sets")
    steps, lr = recipe["steps"], recipe["lr"]
    bs, obs = min(recipe["batch_size"], len(x_in)), min(recipe["outlier_batch_size"], len(x_out))
    gen = torch.Generator().manual_seed(int(ctx.seed))

    def batch_loss() -> Any:
        idx = torch.randint(0, len(x_in), (bs,), generator=gen)
        odx = torch.randint(0, len(x_out), (obs,), generator=gen)
        return step_loss(x_in[idx], y_in[idx], x_out[odx])

    for m in modules:
        m.train()
    tail = one_cycle_train([p for m in modules for p in m.parameters()], steps=steps, lr=lr,
                           batch_loss=batch_loss, desc=desc, progress=ctx.progress)
    for m in modules:
        m.eval()
    return tail


def network_probabilities(net: Any, x: np.ndarray) -> np.ndarray:
    """softmax(net(x)) in batches, without gradients (float64)."""
    import torch

    def run(chunk: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = net(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)))
            return torch.softmax(logits.double(), dim=1).numpy()

    return batched(run, x)


class OEParams(RetrainParams):
    outlier_weight: float = Field(0.5, ge=0, description="lambda: weight of the cross-entropy to the uniform "
                                  "distribution on outliers (Hendrycks et al.: 0.5)")


@detectors.register("oe", params=OEParams)
class OutlierExposureDetector(Detector):
    """Outlier Exposure: the victim retrained to be uniform on an outlier set; score = 1 - max softmax of that model.

    Defender needs: the victim's architecture and training data (it trains a fresh network of that
    architecture with the victim's recipe: steps, batch size, peak lr — ``fit_seconds`` is that
    cost), and an auxiliary outlier set (data role ``outliers``; the built-in ``glyphs`` source
    is one). The retrained model **replaces the victim**: it answers every query
    (:meth:`serving_predict`), so the victim's accuracy under OE is this model's accuracy.

    Loss per step: CE(f(x), y) on an in-distribution batch + lambda * CE(f(x_out), uniform) on
    an outlier batch, where CE to uniform = mean over classes of -log softmax(f(x_out)).
    Both batches go through one forward pass, as in the authors' code (it matters only for
    networks with batch normalisation). The network is trained from scratch, not fine-tuned
    from the victim, so that the cost is comparable with the SAME paper's Table 3.
    """

    replaces_victim = True
    needs_network = True
    needs_outliers = True

    def setup(self, ctx: DetectorContext) -> None:
        import torch

        super().setup(ctx)
        with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the global RNG
            torch.manual_seed(ctx.seed)
            self.network_ = ctx.make_network()
        self.network_.eval()

    def _fit(self, ctx: DetectorContext) -> None:
        import torch
        import torch.nn.functional as F

        recipe = resolved_recipe(self.params, ctx)
        weight = self.params.outlier_weight
        net = self.network_

        def step_loss(x, y, x_out):
            logits = net(torch.cat([x, x_out]))
            logits_in, logits_out = logits[: len(x)], logits[len(x):]
            uniform_ce = -F.log_softmax(logits_out, dim=1).mean(dim=1).mean()
            return F.cross_entropy(logits_in, y) + weight * uniform_ce

        self.train_loss_ = train_with_outliers([net], ctx, recipe, step_loss, desc="training OE victim")

    def state(self) -> dict[str, Any]:
        return {"network": self.network_.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.network_.load_state_dict(state["network"])
        self.network_.eval()

    def serving_predict(self, x: np.ndarray) -> np.ndarray:
        return network_probabilities(self.network_, x)

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty((0,))
        return 1.0 - self.serving_predict(x).max(axis=1)
