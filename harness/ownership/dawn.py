"""DAWN (Szyller et al., ACM MM 2021): a watermark made at the API.

For each client the API derives a key, ``HMAC-SHA256(secret, client id)``. The keyed hash of a query's
bytes picks it (with probability ``rate``) and, when picked, names the wrong class its answer moves
to: uniform over the classes other than the victim's top one. The answer is the victim's
probability vector with the top class and that class swapped, so the same query from the same client
always gets the same answer. The (query, changed label) pairs a client received are the watermark of
whatever model it trains on the answers.

Null hypothesis: the suspect never saw these answers. The changed label is uniform over the K - 1
classes other than the victim's, independently of the suspect, so a suspect that predicts the victim's
class never matches and any other prediction matches with probability 1/(K - 1): its matches are
stochastically below Binomial(n, 1/(K - 1)), which gives an exact (conservative) p-value.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

from stealcheck.oracle import ActiveResponse
from stealcheck.seeds import derive_seed

from .base import Evidence, OwnershipContext, OwnershipScheme, Suspect, Verdict, label_agreement_verdict
from .specs import DawnParams


class DawnLayer:
    """The API side of DAWN: changes the picked answers and keeps each client's watermark."""

    def __init__(self, secret: bytes, rate: float, nb_classes: int):
        self.secret = secret
        self.rate = float(rate)
        self.nb_classes = nb_classes
        self._threshold = int(self.rate * 2**64)
        self.seen: dict[str, int] = {}  # queries seen per client
        self.log: dict[str, dict[str, list]] = {}  # client -> {"index", "x", "label"}

    def client_key(self, client_id: str) -> bytes:
        return hmac.new(self.secret, client_id.encode(), hashlib.sha256).digest()

    def selection(self, x: np.ndarray, client_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(picked, offset) per query: whether its answer changes, and by how many classes (1..K-1)
        past the victim's top class the changed label lies."""
        key = self.client_key(client_id)
        x = np.ascontiguousarray(x, dtype=np.float32)
        picked = np.zeros(len(x), dtype=bool)
        offset = np.zeros(len(x), dtype=np.int64)
        for i, row in enumerate(x):
            digest = hmac.new(key, row.tobytes(), hashlib.sha256).digest()
            picked[i] = int.from_bytes(digest[:8], "big") < self._threshold
            offset[i] = 1 + int.from_bytes(digest[8:16], "big") % max(1, self.nb_classes - 1)
        return picked, offset

    def change(self, x: np.ndarray, probs: np.ndarray, client_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(answers, picked, changed labels) without recording anything."""
        probs = np.array(probs, dtype=np.float64, copy=True)
        picked, offset = self.selection(x, client_id)
        top = probs.argmax(1)
        target = (top + offset) % self.nb_classes
        rows = np.flatnonzero(picked)
        a, b = probs[rows, top[rows]].copy(), probs[rows, target[rows]].copy()
        probs[rows, top[rows]], probs[rows, target[rows]] = b, a
        return probs, picked, target

    def respond(self, x: np.ndarray, probs: np.ndarray, client_id: str) -> ActiveResponse:
        out, picked, target = self.change(x, probs, client_id)
        start = self.seen.get(client_id, 0)
        self.seen[client_id] = start + len(x)
        if picked.any():
            entry = self.log.setdefault(client_id, {"index": [], "x": [], "label": []})
            rows = np.flatnonzero(picked)
            entry["index"] += (start + rows).tolist()
            entry["x"].append(np.asarray(x, dtype=np.float32)[rows])
            entry["label"] += target[rows].tolist()
        # The client cannot tell a changed answer from any other: every query counts as answered.
        return ActiveResponse(out, np.ones(len(x), dtype=bool), np.zeros(len(x)))

    def watermark(self, client_id: str) -> dict[str, np.ndarray]:
        """A client's watermark: the query index, input and changed label of every changed answer."""
        entry = self.log.get(client_id)
        if not entry:
            return {"index": np.empty(0, dtype=np.int64), "x": np.empty((0,), dtype=np.float32),
                    "label": np.empty(0, dtype=np.int64)}
        return {"index": np.asarray(entry["index"], dtype=np.int64), "x": np.concatenate(entry["x"]),
                "label": np.asarray(entry["label"], dtype=np.int64)}


class Dawn(OwnershipScheme):
    """DAWN: the API changes a keyed share of each client's answers; those pairs watermark its copy."""

    params: DawnParams

    def secret(self, seed: int) -> bytes:
        if self.params.key is not None:
            return self.params.key.encode()
        return derive_seed(seed, "dawn secret").to_bytes(4, "big") * 8

    def oracle_layer(self, nb_classes: int, seed: int) -> DawnLayer:
        return DawnLayer(self.secret(seed), self.params.rate, nb_classes)

    def prepare(self, ctx: OwnershipContext) -> Evidence:
        return Evidence({}, {"rate": self.params.rate})  # the evidence is each client's watermark, made at the API

    def verify(self, suspect: Suspect, evidence: Evidence, ctx: OwnershipContext) -> Verdict:
        x, labels = evidence.arrays.get("x"), evidence.arrays.get("label")
        if x is None or len(labels) == 0:
            return Verdict(float("nan"), 1.0, 0, {"matches": 0, "trials": 0})
        return label_agreement_verdict(suspect, x, labels, 1.0 / max(1, ctx.nb_classes - 1))

    def claim(self, x: np.ndarray, labels: np.ndarray, ctx: OwnershipContext) -> Evidence:
        return Evidence({"x": np.asarray(x, dtype=np.float32), "label": np.asarray(labels, dtype=np.int64)})
