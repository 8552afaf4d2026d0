"""The backdoor watermark of Adi et al. (USENIX Security 2018), with a seeded trigger set.

The trigger set is out-of-distribution: letters rendered like the ``glyphs`` data source, or blocky
noise patterns (random 7x7 grids upsampled to the input), each with a label drawn uniformly at
random. The victim is fine-tuned on its training data with a share of every batch taken from the
trigger set (the paper's "fine-tune" variant: the watermark is added to a trained model, so its cost
is the accuracy of the model before and after). A suspect that never saw the trigger set matches a
random label with probability 1/K whatever it predicts, so its matches are Binomial(n, 1/K) under
the null: the exact binomial test gives the p-value.
"""

from __future__ import annotations

import numpy as np

from stealcheck.seeds import derive_seed

from .base import (Evidence, OwnershipContext, OwnershipScheme, Suspect, TrainingEmbedding, Verdict,
                   label_agreement_verdict)
from .specs import BackdoorParams


def trigger_set(params: BackdoorParams, input_shape: tuple[int, ...], clip_values: tuple[float, float],
                nb_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded trigger inputs and their random labels."""
    rng = np.random.default_rng(derive_seed(seed, "backdoor trigger set", params.trigger))
    n = params.size
    if params.trigger == "glyphs" and len(input_shape) == 3:
        from stealcheck.adapters.data import fit_images
        from stealcheck.adapters.glyphs import GlyphParams, render_glyphs

        gp = GlyphParams()
        letters = rng.integers(0, len(gp.alphabet), n)
        x = fit_images(render_glyphs(letters, gp.alphabet, gp, rng, out_size=tuple(input_shape[1:])),
                       tuple(input_shape), clip_values)
    else:  # blocky noise patterns (also the trigger of tabular victims)
        lo, hi = clip_values
        if len(input_shape) == 3:
            import torch
            import torch.nn.functional as F

            c, h, w = input_shape
            grid = rng.uniform(0, 1, (n, c, 7, 7)).astype(np.float32) > 0.6
            x = F.interpolate(torch.from_numpy(grid.astype(np.float32)), size=(h, w), mode="nearest").numpy()
        else:
            x = (rng.uniform(0, 1, (n, *input_shape)) > 0.5).astype(np.float32)
        x = lo + (hi - lo) * x
    y = rng.integers(0, nb_classes, n)
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


class BackdoorWatermark(OwnershipScheme):
    """Adi et al.'s backdoor watermark: a trigger set fine-tuned into the victim, verified by trigger accuracy."""

    params: BackdoorParams

    def _triggers(self, ctx: OwnershipContext) -> tuple[np.ndarray, np.ndarray]:
        return trigger_set(self.params, ctx.input_shape, ctx.clip_values, ctx.nb_classes, ctx.seed)

    def training_embedding(self, ctx: OwnershipContext) -> TrainingEmbedding:
        x, y = self._triggers(ctx)
        return TrainingEmbedding(x, y, self.params.trigger_share, self.params.finetune_steps, self.params.lr)

    def prepare(self, ctx: OwnershipContext) -> Evidence:
        x, y = self._triggers(ctx)
        return Evidence({"x": x, "y": y}, {"chance": 1.0 / ctx.nb_classes})

    def verify(self, suspect: Suspect, evidence: Evidence, ctx: OwnershipContext) -> Verdict:
        return label_agreement_verdict(suspect, evidence.arrays["x"], evidence.arrays["y"], 1.0 / ctx.nb_classes)

    def claim(self, x: np.ndarray, labels: np.ndarray, ctx: OwnershipContext) -> Evidence:
        return Evidence({"x": np.asarray(x, dtype=np.float32), "y": np.asarray(labels, dtype=np.int64)},
                        {"chance": 1.0 / ctx.nb_classes})
