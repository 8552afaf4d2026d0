"""The oracle: the only door between an attacker and the (defended) victim.

It counts every query (one query = one input sample), refuses queries past the budget,
applies the defences and the API's output mode, and records per client id what was asked,
so detectors and per-client defences (PRADA, rate limits) can see who asked what.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from art.estimators.classification import BlackBoxClassifier

from .errors import BudgetExceededError


def apply_output_mode(probs: np.ndarray, mode: str, top_k: int = 1) -> np.ndarray:
    """Shape what the API returns: full probabilities, the top-k only, or a one-hot label.

    Row-wise on batches (ART's ``ClassLabels`` postprocessor marks every row's winner in all rows
    of a batch, so the label mode is ours). ``top_k`` keeps the k largest probabilities and zeros
    the rest (not renormalised: that is what such APIs return).
    """
    probs = np.asarray(probs)
    if mode in ("probabilities", "leaf"):  # leaf: the probabilities too; the node id comes from query_leaves
        return probs
    if mode == "label":
        out = np.zeros_like(probs)
        out[np.arange(len(probs)), np.argmax(probs, axis=1)] = 1.0
        return out
    if mode == "top_k":
        k = min(top_k, probs.shape[1])
        keep = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        out = np.zeros_like(probs)
        rows = np.arange(len(probs))[:, None]
        out[rows, keep] = probs[rows, keep]
        return out
    raise ValueError(f"unknown output mode {mode!r}; expected probabilities, top_k, label or leaf")


@dataclass
class ActiveResponse:
    """What an active defence did to a batch: the answers, which queries were answered in full,
    and the seconds each query cost the client on top of the victim (proof-of-work solving)."""

    probs: np.ndarray
    answered: np.ndarray  # bool (n,)
    seconds: np.ndarray  # float (n,)


@runtime_checkable
class ActiveDefence(Protocol):
    """A defence that sees the queries themselves (reject, proof-of-work, misinformation).

    It sits in the oracle after the victim and the output-perturbation postprocessors.
    """

    def respond(self, x: np.ndarray, probs: np.ndarray, client_id: str) -> ActiveResponse: ...


@dataclass
class ClientRecord:
    """What one client sent: query count, and its first inputs (up to the oracle's record limit),
    how many queries were answered in full, and per-query response times (same limit)."""

    queries: int = 0
    recorded: int = 0
    answered: int = 0
    batches: list[np.ndarray] = field(default_factory=list)
    latencies: list[np.ndarray] = field(default_factory=list)
    seconds_total: float = 0.0

    def inputs(self) -> np.ndarray:
        return np.concatenate(self.batches) if self.batches else np.empty((0,))

    def response_seconds(self) -> np.ndarray:
        """Seconds per query (victim + defence + proof-of-work), for the recorded queries."""
        return np.concatenate(self.latencies) if self.latencies else np.empty((0,))

    @property
    def answered_share(self) -> float:
        return self.answered / self.queries if self.queries else float("nan")


class Oracle(BlackBoxClassifier):
    """An ART ``BlackBoxClassifier`` over the defended victim that counts and records queries.

    Every query is counted; the first ``record_limit`` inputs of each client are kept (in order)
    so that detectors can later be scored on exactly what an attack sent.

    ``victim_predict`` returns the victim's raw probabilities; ``postprocessors`` (callables on
    probability arrays, e.g. ART postprocessors, or :class:`ActiveDefence` objects that also see
    the queries) are applied in order, then the output mode. Response time per query (the batch's
    wall time shared equally, plus what an active defence charged that query) is recorded.
    Answers are float64 whatever the victim's dtype. ``predict`` raises :class:`BudgetExceededError`
    — before answering anything — when a batch would take the client past ``budget``.
    """

    def __init__(self, victim_predict: Callable[[np.ndarray], np.ndarray], input_shape: tuple[int, ...],
                 nb_classes: int, clip_values: tuple[float, float], *,
                 postprocessors: Sequence[Callable[[np.ndarray], np.ndarray]] = (),
                 output_mode: str = "probabilities", top_k: int = 1, budget: int | None = None,
                 record_inputs: bool = True, record_limit: int = 20000, client_id: str = "attacker",
                 leaf_predict: Callable[[np.ndarray], np.ndarray] | None = None):
        super().__init__(predict_fn=self._answer, input_shape=tuple(input_shape), nb_classes=nb_classes,
                         clip_values=clip_values)
        self._victim_predict = victim_predict
        self.postprocessors = list(postprocessors)
        self.output_mode = output_mode
        self.top_k = top_k
        self.budget = budget
        self.record_inputs = record_inputs
        self.record_limit = record_limit  # data-free attacks send millions of inputs: keep the first ones
        self.client_id = client_id
        self.clients: dict[str, ClientRecord] = {}
        self.last_answered = np.zeros(0, dtype=bool)
        if output_mode == "leaf" and leaf_predict is None:
            raise ValueError("output mode 'leaf' needs a decision-tree victim (one that reports leaf ids)")
        self.leaf_predict = leaf_predict  # tree victims: x -> node id (NaN features stop at their node)

    # ART calls predict(x, batch_size=...) on a classifier.
    def predict(self, x: np.ndarray, batch_size: int = 128, client_id: str | None = None, **kwargs) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != tuple(self.input_shape):
            raise ValueError(f"query shape {x.shape[1:]} does not match the victim's input {tuple(self.input_shape)}")
        cid = client_id or self.client_id
        record = self.clients.setdefault(cid, ClientRecord())
        if self.budget is not None and record.queries + len(x) > self.budget:
            raise BudgetExceededError(
                f"client '{cid}' asked for {len(x)} more queries with {record.queries} of {self.budget} used")
        record.queries += len(x)
        keep_n = 0
        if self.record_inputs and record.recorded < self.record_limit:
            keep = x[: self.record_limit - record.recorded].copy()
            keep_n = len(keep)
            record.batches.append(keep)
            record.recorded += keep_n
        start = time.perf_counter()
        out, answered, extra = self._respond(x, cid)
        per_query = (time.perf_counter() - start - float(extra.sum())) / max(1, len(x)) + extra
        record.answered += int(answered.sum())
        self.last_answered = answered  # which queries of this batch were answered in full
        record.seconds_total += float(per_query.sum())
        if keep_n:
            record.latencies.append(per_query[:keep_n])
        return out

    def _respond(self, x: np.ndarray, client_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        probs = self._victim_predict(x)
        answered = np.ones(len(x), dtype=bool)
        extra = np.zeros(len(x))
        for post in self.postprocessors:
            if isinstance(post, ActiveDefence):
                resp = post.respond(x, probs, client_id)
                probs, answered, extra = resp.probs, answered & resp.answered, extra + resp.seconds
            else:
                probs = post(probs)
        # float64, as a real API's JSON doubles: a float32 cast here caps what an attacker can recover
        # (equation solving gets a logistic regression to ~1e-7 instead of ~1e-13). Thieves that train
        # in float32 cast on their own side.
        return np.asarray(apply_output_mode(probs, self.output_mode, self.top_k), dtype=np.float64), answered, extra

    def _answer(self, x: np.ndarray) -> np.ndarray:
        return self._respond(x, self.client_id)[0]

    def query_leaves(self, x: np.ndarray, client_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The leaf output mode (BigML's API): (node id, probabilities) per query, counted like ``predict``.

        NaN features make an incomplete query: it stops at the first node splitting on a missing
        feature, whose id is returned with NaN probabilities (only complete queries get an answer).
        """
        if self.output_mode != "leaf":
            raise ValueError(f"leaf ids need the victim's output mode 'leaf'; this API serves '{self.output_mode}'")
        x = np.asarray(x, dtype=np.float32)
        missing = np.isnan(x).reshape(len(x), -1).any(axis=1)
        probs = self.predict(np.nan_to_num(x, nan=0.0), client_id=client_id)  # counts (and refuses) every row
        probs[missing] = np.nan
        return np.asarray(self.leaf_predict(x), dtype=np.int64), probs

    @property
    def queries_used(self) -> int:
        """Queries of the default client."""
        return self.clients.get(self.client_id, ClientRecord()).queries

    @property
    def total_queries(self) -> int:
        return sum(r.queries for r in self.clients.values())


class CachingClient(BlackBoxClassifier):
    """The attacker's side of the wire: remembers answers, so an input is paid for once.

    Attacks that re-fit at each budget checkpoint ask again for a prefix they already bought;
    a real attacker keeps those answers, and so does this client. Quacks like an ART classifier
    for the attack: an ART classifier itself. Answers are kept and returned as the oracle gave them
    (float64).
    """

    def __init__(self, oracle: Oracle):
        super().__init__(predict_fn=self.predict, input_shape=tuple(oracle.input_shape),
                         nb_classes=oracle.nb_classes, clip_values=oracle.clip_values)
        self.oracle = oracle
        self._answers: dict[bytes, np.ndarray] = {}

    @staticmethod
    def _key(row: np.ndarray) -> bytes:
        return hashlib.blake2b(row.tobytes(), digest_size=16).digest()

    def predict(self, x: np.ndarray, batch_size: int = 128, **kwargs) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        keys = [self._key(row) for row in x]
        missing = [i for i, k in enumerate(keys) if k not in self._answers]
        if missing:
            # Deduplicate within the batch too: one query per distinct input.
            first: dict[bytes, int] = {}
            for i in missing:
                first.setdefault(keys[i], i)
            idx = list(first.values())
            answers = self.oracle.predict(x[idx], batch_size=batch_size)
            for i, a in zip(idx, answers):
                self._answers[keys[i]] = a
        return np.stack([self._answers[k] for k in keys]) if keys else np.empty((0, self.oracle.nb_classes))
