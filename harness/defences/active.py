"""Active defences driven by a detector's score: reject, proof-of-work, adaptive misinformation.

Each is a defence plugin registered with ``needs_detector=True``. Its params name a detector
(``detector:``, the id of an entry of the scenario's ``detectors:`` list) and a target benign
false-positive rate; the runner fits that detector, scores the benign held-out calibration data
with it and calls::

    build(params, nb_classes, *, detector, calibration_scores) -> [defence]

The one object returned implements :class:`stealcheck.oracle.ActiveDefence` (``respond``) and
sits in the oracle after the victim and the output-perturbation postprocessors. The threshold
is ``tau`` = the (1 - target_fpr) quantile of the calibration scores, so about ``target_fpr``
of benign queries score above it.

Detectors with ``per_client = True`` (PRADA) have no per-query score: for them a query counts
as "above tau" (score +inf) from the query at which its client is flagged onwards, and as
"below" (-inf) before — via the detector's ``observe_index(client_id, x)``.

What the oracle records per client (answered share, per-query response seconds) is the metric;
:func:`latency_summary` turns response seconds into mean / p95 milliseconds for the report.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from typing import Any, Callable

import numpy as np

from stealcheck.oracle import ActiveResponse, apply_output_mode
from .specs import MisinformationParams, PowParams, RejectParams


# ---------------------------------------------------------------- shared parts


def threshold_at_fpr(calibration_scores: np.ndarray, target_fpr: float) -> float:
    """The (1 - target_fpr) quantile of benign scores: about ``target_fpr`` of them lie above it."""
    scores = np.asarray(calibration_scores, dtype=np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        raise ValueError("an active defence needs finite detector scores on benign calibration data; got none")
    return float(np.quantile(scores, 1.0 - target_fpr))


def _threshold(detector: Any, calibration_scores: np.ndarray | None, target_fpr: float) -> float:
    """tau for a detector: per-client detectors gate on their flag (scores +-inf), so tau is moot."""
    if getattr(detector, "per_client", False):
        return 0.0
    if calibration_scores is None:
        raise ValueError(f"{type(detector).__name__} gave no calibration scores; an active defence needs them "
                         "to set its threshold")
    return threshold_at_fpr(calibration_scores, target_fpr)


def _spread(calibration_scores: np.ndarray | None) -> float:
    """Std of the benign scores: the unit in which score-dependent knobs are expressed (1 if none)."""
    if calibration_scores is None:
        return 1.0
    scores = np.asarray(calibration_scores, dtype=np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    sd = float(scores.std()) if len(scores) > 1 else 0.0
    return sd if sd > 0 else 1.0


class _ScoredDefence:
    """Holds the detector and the threshold; scores a batch for one client."""

    def __init__(self, detector: Any, tau: float):
        self.detector = detector
        self.tau = float(tau)
        #: the scores of the last batch scored (``stealcheck serve`` writes them to its audit log)
        self.last_scores: np.ndarray = np.empty(0)

    def query_scores(self, x: np.ndarray, client_id: str) -> np.ndarray:
        """Detector score per query; for per-client detectors +inf once the client is flagged, else -inf."""
        if getattr(self.detector, "per_client", False):
            flagged_from = self.detector.observe_index(client_id, x)
            scores = np.full(len(x), -np.inf)
            if flagged_from is not None:
                scores[flagged_from:] = np.inf
        else:
            scores = np.asarray(self.detector.score(x), dtype=np.float64).reshape(len(x))
        self.last_scores = scores
        return scores


def _uniform(n: int, nb_classes: int) -> np.ndarray:
    return np.full((n, nb_classes), 1.0 / nb_classes)


def latency_summary(seconds: np.ndarray) -> dict[str, float]:
    """Mean and 95th-percentile response time in milliseconds (NaN for no queries)."""
    seconds = np.asarray(seconds, dtype=np.float64).ravel()
    if len(seconds) == 0:
        return {"mean_ms": float("nan"), "p95_ms": float("nan")}
    return {"mean_ms": float(seconds.mean() * 1e3), "p95_ms": float(np.percentile(seconds, 95) * 1e3)}


# ---------------------------------------------------------------- reject


class Reject(_ScoredDefence):
    """Refuse (uniform distribution) or answer the label only when the score exceeds tau.

    Either way the query is marked answered=False: it was not answered in full.
    """

    def __init__(self, detector: Any, tau: float, nb_classes: int, mode: str = "refuse"):
        super().__init__(detector, tau)
        self.nb_classes = nb_classes
        self.mode = mode

    def respond(self, x: np.ndarray, probs: np.ndarray, client_id: str) -> ActiveResponse:
        probs = np.asarray(probs, dtype=np.float64)
        suspicious = self.query_scores(x, client_id) > self.tau
        out = probs.copy()
        if suspicious.any():
            if self.mode == "refuse":
                out[suspicious] = 1.0 / probs.shape[1]
            else:
                out[suspicious] = apply_output_mode(probs[suspicious], "label")
        return ActiveResponse(out, ~suspicious, np.zeros(len(x)))


class RejectDefence:
    """Reject queries whose detector score is above the target-FPR threshold (refuse or label only)."""

    @staticmethod
    def build(params: RejectParams, nb_classes: int, *, detector: Any,
              calibration_scores: np.ndarray | None) -> list[Reject]:
        tau = _threshold(detector, calibration_scores, params.target_fpr)
        return [Reject(detector, tau, nb_classes, params.mode)]


# ---------------------------------------------------------------- proof of work

def _leading_zero_bits_ok(digest: bytes, bits: int) -> bool:
    return bits <= 0 or int.from_bytes(digest, "big") >> (8 * len(digest) - bits) == 0


def _nonce_bytes(nonce: int) -> bytes:
    return nonce.to_bytes(8, "big")


def verify(challenge: bytes, nonce: int, bits: int) -> bool:
    """Server side of hashcash: does sha256(challenge || nonce) start with ``bits`` zero bits?"""
    if not isinstance(nonce, int) or not 0 <= nonce < 2**64:
        return False
    return _leading_zero_bits_ok(hashlib.sha256(challenge + _nonce_bytes(nonce)).digest(), bits)


def solve(challenge: bytes, bits: int) -> int:
    """Client side of hashcash: the smallest nonce whose sha256(challenge || nonce) has ``bits``
    leading zero bits (about 2**bits hashes on average)."""
    if bits <= 0:
        return 0
    prefix = hashlib.sha256(challenge)  # hash the challenge once, then only the nonce per try
    shift = 256 - bits
    for nonce in itertools.count():
        h = prefix.copy()
        h.update(_nonce_bytes(nonce))
        if int.from_bytes(h.digest(), "big") >> shift == 0:
            return nonce
    raise AssertionError("unreachable")


class ProofOfWork(_ScoredDefence):
    """Hashcash per query with a difficulty that rises with the detector score.

    For each query the server issues a random 16-byte challenge and a difficulty: ``base_bits``
    at or below tau, above it ``min_bits + round((max_bits - min_bits) * clip((s - tau) /
    (ramp * sd), 0, 1))`` where ``sd`` is the std of the benign calibration scores. The client
    (``solver``, :func:`solve` by default) really searches for the nonce; the time it takes is
    measured with ``time.perf_counter`` and returned as that query's seconds. The server
    verifies the nonce: a wrong one is refused (uniform answer, answered=False); a right one gets
    the normal answer. Per-client counters are kept in ``stats``.
    """

    def __init__(self, detector: Any, tau: float, nb_classes: int, *, base_bits: int = 0, min_bits: int = 8,
                 max_bits: int = 14, scale: float = 1.0, seed: int | None = None,
                 solver: Callable[[bytes, int], int] = solve):
        super().__init__(detector, tau)
        self.nb_classes = nb_classes
        self.base_bits, self.min_bits, self.max_bits = base_bits, min_bits, max_bits
        self.scale = float(scale)
        self.solver = solver
        self._rng = np.random.default_rng(seed) if seed is not None else None
        self.stats: dict[str, dict[str, float]] = {}

    def difficulty(self, scores: np.ndarray) -> np.ndarray:
        """Leading zero bits asked of each query, from its score."""
        scores = np.asarray(scores, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            rise = np.clip((scores - self.tau) / self.scale, 0.0, 1.0)
        bits = self.min_bits + np.rint((self.max_bits - self.min_bits) * np.nan_to_num(rise))
        return np.where(scores > self.tau, bits, self.base_bits).astype(int)

    def _challenge(self) -> bytes:
        if self._rng is not None:
            return self._rng.bytes(16)
        return secrets.token_bytes(16)

    def respond(self, x: np.ndarray, probs: np.ndarray, client_id: str) -> ActiveResponse:
        probs = np.asarray(probs, dtype=np.float64)
        bits = self.difficulty(self.query_scores(x, client_id))
        seconds = np.zeros(len(x))
        answered = np.ones(len(x), dtype=bool)
        for i, b in enumerate(bits):
            if b <= 0:
                continue  # no puzzle: the benign fast path costs nothing
            challenge = self._challenge()
            start = time.perf_counter()
            nonce = self.solver(challenge, int(b))
            seconds[i] = time.perf_counter() - start
            answered[i] = verify(challenge, nonce, int(b))
        out = probs.copy()
        out[~answered] = 1.0 / probs.shape[1]
        st = self.stats.setdefault(client_id, {"queries": 0, "puzzles": 0, "refused": 0, "bits": 0,
                                               "solve_seconds": 0.0})
        st["queries"] += len(x)
        st["puzzles"] += int((bits > 0).sum())
        st["refused"] += int((~answered).sum())
        st["bits"] += int(bits.sum())
        st["solve_seconds"] += float(seconds.sum())
        return ActiveResponse(out, answered, seconds)


class ProofOfWorkDefence:
    """Proof of work (Dziedzic et al., ICLR 2022): SHA-256 hashcash, harder for higher detector scores."""

    @staticmethod
    def build(params: PowParams, nb_classes: int, *, detector: Any,
              calibration_scores: np.ndarray | None) -> list[ProofOfWork]:
        tau = _threshold(detector, calibration_scores, params.target_fpr)
        return [ProofOfWork(detector, tau, nb_classes, base_bits=params.base_bits, min_bits=params.min_bits,
                            max_bits=params.max_bits, scale=params.ramp * _spread(calibration_scores),
                            seed=params.seed)]


# ---------------------------------------------------------------- adaptive misinformation


def misinformation_distribution(probs: np.ndarray, kind: str = "reverse") -> np.ndarray:
    """A distribution pushed away from the victim's answer, with (almost) no mass on its top class.

    ``reverse``: softmax of the negated log-probabilities (i.e. proportional to 1 / y), which
    ranks the classes in the opposite order — a stand-in for the paper's misinformation model
    trained to minimise the probability of the correct class. ``uniform_other``: uniform over
    every class but the top one.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if kind == "reverse":
        neg = -np.log(np.clip(probs, 1e-12, None))
        neg -= neg.max(axis=1, keepdims=True)
        e = np.exp(neg)
        return e / e.sum(axis=1, keepdims=True)
    if kind == "uniform_other":
        out = np.ones_like(probs)
        out[np.arange(len(probs)), np.argmax(probs, axis=1)] = 0.0
        return out / max(1, probs.shape[1] - 1)
    raise ValueError(f"unknown misinformation kind {kind!r}; expected reverse or uniform_other")


class AdaptiveMisinformation(_ScoredDefence):
    """Answer ``(1 - a) y + a y_hat`` with ``a = sigmoid(k (score - tau))`` (answered=False when a > 0.5).

    With the max-softmax detector (score = 1 - max y) this is the paper's
    ``a = sigmoid(k (tau' - max y))`` with ``tau' = 1 - tau``.
    """

    def __init__(self, detector: Any, tau: float, k: float, misinformation: str = "reverse"):
        super().__init__(detector, tau)
        self.k = float(k)
        self.misinformation = misinformation

    def blend_weight(self, scores: np.ndarray) -> np.ndarray:
        """``a`` per query (0 for clear benign, 1 for clear attack; +-inf scores give 1 / 0)."""
        z = self.k * (np.asarray(scores, dtype=np.float64) - self.tau)
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic sigmoid, without overflow warnings

    def respond(self, x: np.ndarray, probs: np.ndarray, client_id: str) -> ActiveResponse:
        probs = np.asarray(probs, dtype=np.float64)
        a = self.blend_weight(self.query_scores(x, client_id))[:, None]
        out = (1.0 - a) * probs + a * misinformation_distribution(probs, self.misinformation)
        return ActiveResponse(out, a[:, 0] <= 0.5, np.zeros(len(x)))


class MisinformationDefence:
    """Adaptive misinformation (Kariyappa & Qureshi, CVPR 2020): blend in a wrong answer as the score rises."""

    @staticmethod
    def build(params: MisinformationParams, nb_classes: int, *, detector: Any,
              calibration_scores: np.ndarray | None) -> list[AdaptiveMisinformation]:
        tau = _threshold(detector, calibration_scores, params.target_fpr)
        k = params.k if params.k is not None else 10.0 / _spread(calibration_scores)
        return [AdaptiveMisinformation(detector, tau, k, params.misinformation)]


__all__ = ["AdaptiveMisinformation", "MisinformationParams", "PowParams", "ProofOfWork", "Reject", "RejectParams",
           "latency_summary", "misinformation_distribution", "solve", "threshold_at_fpr", "verify"]
