"""Confidence baselines on the plain victim: maximum softmax probability and the energy score.

Neither trains anything nor changes the victim; the defender needs only the victim's outputs
(the energy score also wants its logits). They are the yardstick every learned detector must beat:
on the SAME setting's proxy-set attacks they are strong (a CPU prototype of that setting, quoted in
``benchmarks/detection_mnist.py``: AUROC ~97-98 against upscaled digits) and on JBDA's near-in-distribution queries weak (~55-58).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from stealcheck.registry import NoParams, PARAMS_CONFIG, detectors

from .detectors import Detector, DetectorContext, batched


@detectors.register("msp", params=NoParams)
class MaxSoftmaxDetector(Detector):
    """Maximum softmax probability of the plain victim (Hendrycks & Gimpel 2017): score = 1 - max_c p(c|x).

    Defender needs: black-box access to the victim's probabilities. No training, no auxiliary data,
    the victim is unchanged.
    """

    def _fit(self, ctx: DetectorContext) -> None:
        """Nothing to learn: the context (the victim's predict_proba) is all it needs."""

    def score(self, x: np.ndarray) -> np.ndarray:
        assert self._ctx is not None, "fit() or load() the detector first"
        probs = batched(self._ctx.predict_proba, x)
        return 1.0 - probs.max(axis=1) if len(x) else np.empty((0,))


class EnergyParams(BaseModel):
    model_config = PARAMS_CONFIG
    temperature: float = Field(1.0, gt=0, description="temperature T of E(x) = -T * logsumexp(logits / T); "
                               "Liu et al. use 1")


@detectors.register("energy", params=EnergyParams, needs_logits=lambda p: p.temperature == 1.0)
class EnergyDetector(Detector):
    """Energy score of the plain victim (Liu et al., NeurIPS 2020): score = E(x) = -T * logsumexp(logits(x) / T).

    Higher energy = less like the training data = more suspicious. (Liu et al. write their
    in-distribution score as -E(x); the suspicion score is its negation, E(x).)

    Defender needs: the victim's logits, i.e. a PyTorch victim (``ctx.logits``). No training, no
    auxiliary data, the victim is unchanged.

    Without logits the energy cannot be recovered. Probabilities give the logits only up to a
    shift *that differs from input to input* (softmax(z) = softmax(z + c(x))), and the shift
    ``c(x) = logsumexp(z(x))`` is exactly what the energy measures: at T = 1 the energy of the
    log-probabilities, -log sum_c p_c, is 0 for every input. So for a victim without logits:
    at T = 1 fitting fails with an explanation; at T != 1 the detector uses log-probabilities,
    E_p(x) = -T * log sum_c p_c^(1/T), which is a different, probability-only score (a monotone
    function of the Renyi entropy of order 1/T; T -> 0 approaches max-softmax), not the energy.
    ``source_`` records which one was used.
    """

    def setup(self, ctx: DetectorContext) -> None:
        # checked here, not in _fit, so that loading a cached detector refuses the same contexts
        if ctx.logits is None and self.params.temperature == 1.0:
            raise ValueError("The energy detector needs the victim's logits (a PyTorch victim): from probabilities "
                             "alone the energy at temperature 1 is -log(sum p) = 0 for every input. Use 'msp', or "
                             "set temperature != 1 for the probability-only variant.")
        super().setup(ctx)
        self.source_ = "logits" if ctx.logits is not None else "log_probabilities"

    def _fit(self, ctx: DetectorContext) -> None:
        """Nothing to learn."""

    def _values(self, x: np.ndarray) -> np.ndarray:
        assert self._ctx is not None, "fit() or load() the detector first"
        if self._ctx.logits is not None:
            return np.asarray(self._ctx.logits(x), dtype=np.float64)
        # floor p so that a zero probability (label-like outputs) gives a finite log
        return np.log(np.clip(np.asarray(self._ctx.predict_proba(x), dtype=np.float64), 1e-12, None))

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty((0,))
        t = self.params.temperature
        z = batched(self._values, x) / t
        top = z.max(axis=1, keepdims=True)
        logsumexp = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return -t * logsumexp
