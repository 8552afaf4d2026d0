"""What every ownership scheme shares: the statistics, the suspect behind a counting black box, the
defender's context, and the interface ``prepare`` / ``verify``.

A scheme is a class built from its params with three hooks (each optional but ``verify``):

- ``training_embedding(ctx) -> TrainingEmbedding | None``: samples (x, labels) the victim must be
  trained or fine-tuned with (a backdoor trigger set). A training-time defence composes with it by
  training on the same extra samples with its own recipe (DP-SGD, adversarial training);
- ``oracle_layer(ctx) -> ActiveDefence | None``: a layer the API puts on its answers (DAWN);
- ``prepare(ctx) -> Evidence``: what verification needs (trigger set, fingerprints, a regressor);
- ``verify(suspect, evidence, ctx) -> Verdict``: black-box queries to the suspect, counted.

``claim(x, labels) -> Evidence`` turns inputs with chosen labels into this scheme's kind of evidence:
what a malicious accuser presents in a false claim (:mod:`.false_claims`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from stealcheck.datasets import Dataset
from stealcheck.oracle import Oracle


# ---------------------------------------------------------------- statistics (exact, scipy)


def binomial_p_value(matches: int, trials: int, chance: float) -> float:
    """P(X >= matches) for X ~ Binomial(trials, chance): the one-sided exact binomial test."""
    from scipy.stats import binomtest

    if trials <= 0:
        return 1.0
    return float(binomtest(int(matches), int(trials), float(chance), alternative="greater").pvalue)


def welch_p_value(private: np.ndarray, public: np.ndarray) -> tuple[float, float]:
    """One-sided Welch t-test that ``private`` has the larger mean: (t statistic, p-value)."""
    from scipy.stats import ttest_ind

    private, public = np.asarray(private, dtype=np.float64), np.asarray(public, dtype=np.float64)
    both = np.concatenate([private, public])
    if np.ptp(both) <= 1e-9 * max(1.0, float(np.abs(both).max())):  # no spread (a constant suspect): no evidence
        return 0.0, 1.0
    with warnings.catch_warnings():  # near-constant scores (a walk that rarely flips): scipy warns, the test stands
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_ind(private, public, equal_var=False, alternative="greater")
    t, p = float(res.statistic), float(res.pvalue)
    return (t if math.isfinite(t) else 0.0), (p if math.isfinite(p) else 1.0)


def smallest_significant(trials: int, chance: float, alpha: float) -> int | None:
    """The fewest matches out of ``trials`` whose binomial p-value is below ``alpha`` (None: none is)."""
    from scipy.stats import binom

    # P(X >= k) = sf(k - 1) < alpha
    for k in range(trials + 1):
        if binom.sf(k - 1, trials, chance) < alpha:
            return k
    return None


# ---------------------------------------------------------------- suspects and verdicts


class Suspect:
    """A suspect model behind a black box that answers labels and counts every query.

    ``predict_proba`` is the model's (x -> probabilities); verification sees only its top labels
    through an :class:`~stealcheck.oracle.Oracle` in label mode, so ``queries`` is what a verifier
    with API access to the suspect would pay.
    """

    def __init__(self, name: str, predict_proba: Callable[[np.ndarray], np.ndarray], input_shape: tuple[int, ...],
                 nb_classes: int, clip_values: tuple[float, float], *, network: Any = None,
                 group: str = "copy", info: dict | None = None):
        self.name = name
        self.group = group  # copy | independent | victim
        self.network = network  # white-box access when the suspect is a local torch model (else None)
        self.info = dict(info or {})
        self.oracle = Oracle(predict_proba, tuple(input_shape), nb_classes, clip_values, output_mode="label",
                             record_inputs=False, client_id="verifier")
        self._predict_proba = predict_proba

    def labels(self, x: np.ndarray) -> np.ndarray:
        """The suspect's top labels on ``x`` (counted)."""
        if len(x) == 0:
            return np.empty(0, dtype=np.int64)
        return np.asarray(self.oracle.predict(np.asarray(x, dtype=np.float32)), dtype=np.float64).argmax(1)

    @property
    def queries(self) -> int:
        return self.oracle.queries_used


@dataclass
class Verdict:
    """A scheme's answer on one suspect: the statistic, its p-value and what it cost."""

    statistic: float
    p_value: float
    queries: int
    extra: dict[str, float] = field(default_factory=dict)

    def detected(self, alpha: float) -> bool:
        return self.p_value < alpha


@dataclass
class Evidence:
    """What a claim rests on: arrays (inputs, labels, ...) and scalars, with a commitment to them.

    ``commitment`` is SHA-256 over the arrays' bytes and the scalars: publishing it (with a trusted
    timestamp) before a suspect exists binds the claimant to this evidence.
    """

    arrays: dict[str, np.ndarray]
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def commitment(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.arrays):
            a = np.ascontiguousarray(self.arrays[name])
            h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
        h.update(repr(sorted(self.values.items())).encode())
        return h.hexdigest()


@dataclass
class TrainingEmbedding:
    """Extra training samples a scheme embeds into the victim: inputs and hard labels, and the share of
    each training batch drawn from them."""

    x: np.ndarray
    y: np.ndarray
    batch_share: float
    steps: int
    lr: float


@dataclass
class OwnershipContext:
    """What the defender holds when it prepares and verifies: the victim (white-box: it is its own), its
    private training data, public data, and a way to train more models like its victim."""

    victim: Any  # stealcheck.victim.Victim, the deployed (watermarked) one
    private: Dataset  # the victim's training data (dataset inference's private samples)
    public: Dataset  # data the victim never trained on
    nb_classes: int
    input_shape: tuple[int, ...]
    clip_values: tuple[float, float]
    seed: int
    alpha: float
    #: (x, soft targets, architecture or None for the victim's, seed, steps or None) -> trained torch network
    train_model: Callable[..., Any] | None = None


class OwnershipScheme:
    """Base class of the built-in schemes (subclasses set ``__init__(params)`` and ``verify``)."""

    def __init__(self, params: Any):
        self.params = params

    def training_embedding(self, ctx: OwnershipContext) -> TrainingEmbedding | None:
        return None

    def oracle_layer(self, nb_classes: int, seed: int) -> Any:
        return None

    def prepare(self, ctx: OwnershipContext) -> Evidence:
        return Evidence({})

    def verify(self, suspect: Suspect, evidence: Evidence, ctx: OwnershipContext) -> Verdict:
        raise NotImplementedError

    def claim(self, x: np.ndarray, labels: np.ndarray, ctx: OwnershipContext) -> Evidence:
        """Evidence of this scheme's kind made of ``x`` with ``labels`` (a false claim's forgery)."""
        raise NotImplementedError(f"{type(self).__name__} has no label evidence to forge")


def label_agreement_verdict(suspect: Suspect, x: np.ndarray, labels: np.ndarray, chance: float) -> Verdict:
    """The statistic of every label-evidence scheme: the suspect's agreement with ``labels`` on ``x``,
    and the exact binomial p-value against ``chance``."""
    before = suspect.queries
    predicted = suspect.labels(x)
    matches = int((predicted == np.asarray(labels)).sum())
    n = len(labels)
    return Verdict(matches / n if n else float("nan"), binomial_p_value(matches, n, chance),
                   suspect.queries - before, {"matches": matches, "trials": n, "chance": chance})
