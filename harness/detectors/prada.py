"""PRADA (Juuti et al., EuroS&P 2019): flag a *client* whose query stream looks synthetic.

Model-extraction attacks that synthesise queries (JBDA and its variants) send inputs that are
small, fixed-size steps away from earlier ones, so the distance from each new query to the
closest earlier one is far from normally distributed; natural queries give a roughly normal
distribution of such distances. PRADA keeps, per client, per predicted class, a growing set of
earlier queries and tests the pooled minimum distances with the Shapiro–Wilk statistic.

Algorithm (Algorithm 1 of the paper, kept as written):

- the victim's predicted class ``c`` of a query ``x`` picks the growing set ``G_c``;
- the first query of a class starts ``G_c`` and gives no distance;
- otherwise ``d_min`` = min L2 distance from ``x`` to ``G_c`` is pooled into ``D``; when
  ``d_min > T_c`` the query joins ``G_c`` and the class threshold becomes
  ``T_c = max(T_c, mean(D_Gc) - std(D_Gc))``, ``D_Gc`` being the ``d_min`` of the members that
  joined ``G_c`` (so queries that are near-copies of a member are not added, and the set grows
  with the spread of the class);
- once ``|D| >= min_distances`` (100 in the paper), distances beyond mean ± 3 std of ``D`` are
  dropped (the authors' outlier removal) and the client is flagged when ``W(D') < delta``.

Distances are L2 on the flattened inputs, as the victim sees them (no feature space).
Growing sets live in pre-allocated arrays with their squared norms, so a query's distance to a
set of thousands is one matrix-vector product.

What the defender needs: a per-client history (the oracle's client ids) and the victim's labels —
no training data, no retraining. It flags clients, not queries: an attacker with many accounts
(``spread_over_clients``) escapes it, which is the weakness SAME's paper points out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from stealcheck.registry import PARAMS_CONFIG, detectors

from .detectors import Detector, DetectorContext


def _shapiro_w(d: np.ndarray):
    """scipy's Shapiro-Wilk test, imported on first use (scipy.stats is slow to import for validate).

    scipy's nan-policy wrapper inspects signatures on every call: 4/5 of the cost of testing after
    each query. The wrapped function is the same test (same result), called directly when present.
    Past 5,000 distances scipy warns that the *p-value* may be inaccurate; PRADA uses the statistic W,
    so that warning (once per query of a long-lived client) is silenced.
    """
    import warnings

    from scipy.stats import shapiro

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*computed p-value may not be accurate")
        return getattr(shapiro, "__wrapped__", shapiro)(d)


class PradaParams(BaseModel):
    model_config = PARAMS_CONFIG
    delta: float = Field(0.9, gt=0, lt=1,
                         description="flag a client when the Shapiro-Wilk W of its distances is below this")
    min_distances: int = Field(100, ge=3, description="distances pooled before the test runs (paper: 100)")
    outlier_std: float | None = Field(3.0, gt=0, description="drop distances beyond mean ± this many std before "
                                                             "the test (authors' code: 3); None keeps all")


class _GrowingSet:
    """Rows of one class's growing set, with squared norms, in an array that doubles when full."""

    def __init__(self, dim: int, capacity: int = 64):
        self.rows = np.empty((capacity, dim), dtype=np.float64)
        self.sq_norms = np.empty(capacity, dtype=np.float64)
        self.size = 0

    def min_distance(self, x: np.ndarray, x_sq: float) -> float:
        n = self.size
        sq = self.sq_norms[:n] - 2.0 * (self.rows[:n] @ x) + x_sq
        return float(np.sqrt(max(float(sq.min()), 0.0)))

    def add(self, x: np.ndarray, x_sq: float) -> None:
        if self.size == len(self.rows):
            self.rows = np.concatenate([self.rows, np.empty_like(self.rows)])
            self.sq_norms = np.concatenate([self.sq_norms, np.empty_like(self.sq_norms)])
        self.rows[self.size] = x
        self.sq_norms[self.size] = x_sq
        self.size += 1


class PradaStream:
    """PRADA's state for one client: growing sets, class thresholds, pooled distances, the flag."""

    def __init__(self, params: PradaParams):
        self.params = params
        self.sets: dict[int, _GrowingSet] = {}
        self.member_distances: dict[int, list[float]] = {}  # D_Gc: d_min of the members of G_c
        self.thresholds: dict[int, float] = {}  # T_c
        self._distances = np.empty(256)  # D, in a buffer that doubles when full
        self.n_distances = 0
        self.seen = 0
        self.flagged_at: int | None = None
        self.last_w = float("nan")

    @property
    def distances(self) -> np.ndarray:
        """The pooled minimum distances D, in query order."""
        return self._distances[:self.n_distances]

    def _pool(self, d_min: float) -> None:
        if self.n_distances == len(self._distances):
            self._distances = np.concatenate([self._distances, np.empty_like(self._distances)])
        self._distances[self.n_distances] = d_min
        self.n_distances += 1

    def statistic(self) -> float:
        """Shapiro–Wilk W of the pooled distances (outliers removed); NaN before ``min_distances``."""
        if self.n_distances < self.params.min_distances:
            return float("nan")
        d = self.distances
        if self.params.outlier_std is not None:
            mu, sd = d.mean(), d.std()
            d = d[np.abs(d - mu) <= self.params.outlier_std * sd]
        if len(d) < 3 or np.ptp(d) == 0:
            # All distances equal (e.g. a client re-sending one perturbation step): as far from a
            # normal sample as can be; scipy would warn and return 1.
            return 0.0
        return float(_shapiro_w(d)[0])

    def update(self, x: np.ndarray, label: int) -> float:
        """Take one query (flattened, float64) with the victim's label; return W after it (or NaN)."""
        index = self.seen
        self.seen += 1
        x_sq = float(x @ x)
        growing = self.sets.get(label)
        if growing is None:
            growing = self.sets[label] = _GrowingSet(len(x))
            growing.add(x, x_sq)
            self.member_distances[label] = []
            self.thresholds[label] = 0.0
            return self.last_w
        d_min = growing.min_distance(x, x_sq)
        self._pool(d_min)
        if d_min > self.thresholds[label]:
            growing.add(x, x_sq)
            members = self.member_distances[label]
            members.append(d_min)
            self.thresholds[label] = max(self.thresholds[label], float(np.mean(members) - np.std(members)))
        self.last_w = self.statistic()
        if self.flagged_at is None and self.last_w < self.params.delta:
            self.flagged_at = index
        return self.last_w

    # -- (de)serialisation as plain tensors / numbers (torch.load(weights_only=True) safe) ------
    def state(self) -> dict[str, Any]:
        import torch

        return {
            "classes": [int(c) for c in self.sets],
            "rows": [torch.from_numpy(s.rows[:s.size].copy()) for s in self.sets.values()],
            "member_distances": [torch.tensor(self.member_distances[c], dtype=torch.float64) for c in self.sets],
            "thresholds": [float(self.thresholds[c]) for c in self.sets],
            "distances": torch.from_numpy(self.distances.copy()),
            "seen": self.seen,
            "flagged_at": -1 if self.flagged_at is None else self.flagged_at,
            "last_w": self.last_w,
        }

    @classmethod
    def from_state(cls, params: PradaParams, state: dict[str, Any]) -> "PradaStream":
        stream = cls(params)
        for c, rows, members, thr in zip(state["classes"], state["rows"], state["member_distances"],
                                         state["thresholds"]):
            rows = rows.numpy().astype(np.float64)
            growing = _GrowingSet(rows.shape[1], capacity=max(64, len(rows)))
            for row in rows:
                growing.add(row, float(row @ row))
            stream.sets[int(c)] = growing
            stream.member_distances[int(c)] = members.tolist()
            stream.thresholds[int(c)] = float(thr)
        for d_min in state["distances"].tolist():
            stream._pool(d_min)
        stream.seen = int(state["seen"])
        stream.flagged_at = None if int(state["flagged_at"]) < 0 else int(state["flagged_at"])
        stream.last_w = float(state["last_w"])
        return stream


@detectors.register("prada", params=PradaParams)
class Prada(Detector):
    """PRADA: flags clients whose minimum query distances fail a Shapiro-Wilk normality test.

    Needs per-client query history and the victim's labels only (no training data, no
    retraining, no outlier set). Per-client: use :meth:`flag_stream` (a whole stream, fresh
    state) or :meth:`observe` (stateful, batch by batch, per client id, as in the oracle).

    ``score(x)`` treats ``x`` as ONE client's stream in order and returns, per query, ``1 - W``
    of the distances pooled up to it (0 before ``min_distances`` are pooled): the client is
    flagged at the first query whose score exceeds ``1 - delta``. It is not a per-query
    anomaly score — a query's own minimum distance says nothing by itself — so do not compute
    a per-query AUROC with it, and do not give PRADA to a score-threshold active defence; the
    active defences use :meth:`observe` instead for detectors with ``per_client = True``.
    """

    per_client = True

    def __init__(self, params: PradaParams):
        super().__init__(params)
        self.streams: dict[str, PradaStream] = {}

    def _fit(self, ctx: DetectorContext) -> None:
        # Nothing to learn: PRADA's state is per client and built while queries arrive.
        return None

    def _labels(self, x: np.ndarray) -> np.ndarray:
        if self._ctx is None:
            raise RuntimeError("Prada needs fit(ctx) or load(folder, ctx) first (it labels queries with the victim)")
        return np.argmax(np.asarray(self._ctx.predict_proba(x)), axis=1)

    def _run(self, stream: PradaStream, x: np.ndarray, stop_at_flag: bool = False) -> np.ndarray:
        """Feed ``x`` to ``stream`` in order; W after each query (NaN for the queries not fed
        when ``stop_at_flag`` ends the stream at the flag)."""
        x = np.asarray(x)
        w = np.full(len(x), np.nan)
        if len(x) == 0:
            return w
        labels = self._labels(x)
        flat = x.reshape(len(x), -1).astype(np.float64)
        for i, (row, c) in enumerate(zip(flat, labels)):
            w[i] = stream.update(row, int(c))
            if stop_at_flag and stream.flagged_at is not None:
                break
        return w

    def score(self, x: np.ndarray) -> np.ndarray:
        """``1 - W`` after each query of ``x`` taken as one client's stream (0 before the test runs)."""
        w = self._run(PradaStream(self.params), x)
        return np.where(np.isnan(w), 0.0, 1.0 - w)

    def flag_stream(self, x: np.ndarray) -> int | None:
        """Index of the query at which a client sending ``x`` in order (fresh state) is flagged, or None."""
        stream = PradaStream(self.params)
        self._run(stream, x, stop_at_flag=True)
        return stream.flagged_at

    # -- stateful, per client (what an oracle-side gate uses) -----------------------------------
    def observe(self, client_id: str, x_batch: np.ndarray) -> bool:
        """Add a batch to ``client_id``'s history; True when that client is (or already was) flagged."""
        return self.observe_index(client_id, x_batch) is not None

    def observe_index(self, client_id: str, x_batch: np.ndarray) -> int | None:
        """Like :meth:`observe`, but the index in ``x_batch`` from which the client is flagged
        (0 when it already was before this batch), or None."""
        stream = self.streams.setdefault(client_id, PradaStream(self.params))
        before = stream.seen
        self._run(stream, x_batch)
        if stream.flagged_at is None:
            return None
        return max(0, stream.flagged_at - before)

    def is_flagged(self, client_id: str) -> bool:
        """Whether ``client_id`` has been flagged by :meth:`observe`."""
        stream = self.streams.get(client_id)
        return stream is not None and stream.flagged_at is not None

    def reset(self, client_id: str | None = None) -> None:
        """Forget one client's history (or every client's)."""
        if client_id is None:
            self.streams.clear()
        else:
            self.streams.pop(client_id, None)

    def state(self) -> dict[str, Any]:
        """Per-client histories (growing sets, thresholds, distances, flags)."""
        ids = list(self.streams)
        return {"client_ids": ids, "streams": [self.streams[c].state() for c in ids]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.streams = {cid: PradaStream.from_state(self.params, s)
                        for cid, s in zip(state.get("client_ids", []), state.get("streams", []))}


def spread_over_clients(x: np.ndarray, n_clients: int) -> list[np.ndarray]:
    """Split one attack's queries round-robin over ``n_clients`` accounts (query i to client i mod n).

    Each account's stream keeps the attack's order. This is the distributed (Sybil) attacker that
    per-client detectors such as PRADA cannot see as a whole.
    """
    if n_clients < 1:
        raise ValueError("The 'n_clients' parameter of spread_over_clients must be a positive integer. "
                         f"Got {n_clients} instead.")
    x = np.asarray(x)
    return [x[i::n_clients] for i in range(n_clients)]
