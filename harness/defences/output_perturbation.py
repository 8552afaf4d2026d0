"""Output-perturbation defences: ART's postprocessors, our label-only mode, and chains of them.

A defence plugin's ``build(params, nb_classes)`` returns a list of callables mapping a batch of
probability vectors to what the API serves. They run in the oracle, after the victim and
before the output mode.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from art.defences.postprocessor import GaussianNoise, HighConfidence, Postprocessor, ReverseSigmoid, Rounded

from stealcheck.oracle import apply_output_mode
from stealcheck.registry import NoParams, defences
from .specs import ChainParams, GaussianNoiseParams, HighConfidenceParams, ReverseSigmoidParams, RoundedParams

PostFn = Callable[[np.ndarray], np.ndarray]


class LabelOnly(Postprocessor):
    """One-hot of the top class, row by row.

    ART's ``ClassLabels`` marks every row's winning class in all rows of a batch (ART 1.20.1),
    which corrupts batched answers; this one is correct on batches.
    """

    def __init__(self) -> None:
        super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        return apply_output_mode(preds, "label")


class Finite(Postprocessor):
    """Wraps a postprocessor and replaces rows it turned non-finite by the uniform distribution.

    ART's ``ReverseSigmoid`` divides by the sum of the clipped, perturbed row: with a large beta
    every entry can clip to 0 and the row becomes NaN, which would poison the attacker's training
    and every metric. A uniform row is what that defence means in the limit.
    """

    def __init__(self, inner: Postprocessor):
        super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)
        self.inner = inner

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(self.inner(preds), dtype=np.float64)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            out[bad] = 1.0 / out.shape[1]
        return out


class NoDefence:
    """No defence: the victim's outputs as they are (the baseline of every report)."""

    @staticmethod
    def build(params: NoParams, nb_classes: int) -> list[PostFn]:
        return []


class RoundedDefence:
    """Round the probabilities to a few decimals (ART Rounded)."""

    @staticmethod
    def build(params: RoundedParams, nb_classes: int) -> list[PostFn]:
        return [Rounded(decimals=params.decimals)]


class ReverseSigmoidDefence:
    """Reverse sigmoid perturbation of the probabilities (ART ReverseSigmoid, NaN rows made uniform)."""

    @staticmethod
    def build(params: ReverseSigmoidParams, nb_classes: int) -> list[PostFn]:
        return [Finite(ReverseSigmoid(beta=params.beta, gamma=params.gamma))]


class HighConfidenceDefence:
    """Zero every probability below a cutoff (ART HighConfidence)."""

    @staticmethod
    def build(params: HighConfidenceParams, nb_classes: int) -> list[PostFn]:
        return [HighConfidence(cutoff=params.cutoff)]


class GaussianNoiseDefence:
    """Add Gaussian noise to the probabilities and renormalise (ART GaussianNoise; uses np.random)."""

    @staticmethod
    def build(params: GaussianNoiseParams, nb_classes: int) -> list[PostFn]:
        return [GaussianNoise(scale=params.scale)]


class LabelOnlyDefence:
    """Answer with the top class only (one-hot), correct on batches unlike ART's ClassLabels."""

    @staticmethod
    def build(params: NoParams, nb_classes: int) -> list[PostFn]:
        return [LabelOnly()]


class ChainDefence:
    """Several defences applied one after the other, e.g. reverse_sigmoid then rounded."""

    @staticmethod
    def build(params: ChainParams, nb_classes: int) -> list[PostFn]:
        out: list[PostFn] = []
        for ref in params.steps:
            out += defences.get(ref.plugin).obj.build(ref.params, nb_classes)
        return out
