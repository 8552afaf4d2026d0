"""EDM — Ensemble of Diverse Models (Kariyappa, Prakash & Qureshi, ICLR 2021) as a detector and a serving model.

The authors published no code; this module follows the paper's description (an ensemble whose
members agree on in-distribution data and are trained to disagree on outliers; a hash of the
query picks the member that answers) and the SAME paper's use of it as a detector (score from the
members' consensus). Every choice the descriptions leave open is listed in :class:`EDMDetector`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
from pydantic import Field

from stealcheck.registry import detectors

from .detectors import Detector, DetectorContext
from .oe import RetrainParams, network_probabilities, resolved_recipe, train_with_outliers


class EDMParams(RetrainParams):
    members: int = Field(5, ge=2, le=32, description="ensemble size K (each member has the victim's architecture)")
    diversity_weight: float = Field(1.0, ge=0, description="lambda_D: weight of the diversity loss (smoothed "
                                    "coherence of the members' predictions on outliers)")
    disagreement: Literal["cosine", "variance", "vote"] = Field(
        "cosine", description="anomaly score: 'cosine' = 1 - mean pairwise cosine similarity of the members' "
        "probability vectors (what training pushes down on outliers); 'variance' = variance of the members' "
        "probabilities, summed over classes; 'vote' = 1 - mean pairwise agreement of their top classes")


def route(x: np.ndarray, members: int, key: int) -> np.ndarray:
    """The member that answers each query: keyed BLAKE2b of the query's float32 bytes, mod ``members``.

    Deterministic (the same query always gets the same member, so repeating a query reveals
    nothing) and discontinuous (any change of the input, however small, re-draws the member —
    the discontinuity EDM relies on). The key (from the scenario seed) stands in for the
    defender's secret.
    """
    rows = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    secret = f"stealcheck-edm-{key}".encode()
    return np.fromiter((int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=secret).digest(), "little")
                        % members for row in rows), dtype=np.int64, count=len(rows))


def pairwise_cosine(probs: Any) -> Any:
    """Cosine similarity of every pair of members: (K, n, C) probabilities -> (P, n), P = K(K-1)/2.

    Works on torch tensors and on numpy arrays.
    """
    k = probs.shape[0]
    rows, cols = np.triu_indices(k, 1)
    norms = (probs * probs).sum(-1) ** 0.5
    unit = probs / (norms[..., None] + 1e-12)
    return (unit[rows] * unit[cols]).sum(-1)


@detectors.register("edm", params=EDMParams)
class EDMDetector(Detector):
    """Ensemble of Diverse Models: K members that agree on in-distribution data and disagree on outliers;
    score = disagreement among the members, and a hash of each query picks the member that answers.

    Defender needs: the victim's architecture and training data (it trains K fresh networks of that
    architecture jointly, each for the victim's number of steps: roughly 2K times the victim's
    training cost, ``fit_seconds``), and an auxiliary outlier set (data role ``outliers``; the
    built-in ``glyphs`` source is one). The ensemble **replaces the victim** (:meth:`serving_predict`),
    and scoring costs K forward passes per query.

    Choices (the paper gives the idea; these are ours, to be read beside it):

    - Members: K = 5 networks of the victim's architecture, initialised from different seeds, trained
      jointly with one Adam optimiser and the victim's recipe (steps, batch size, peak lr,
      one-cycle schedule); every member sees the same in-distribution and outlier batch.
    - Accuracy loss: the sum over members of CE(f_k(x), y) on the victim's training data.
    - Diversity loss: the coherence of the members' *probability vectors* on outliers — the
      largest pairwise cosine similarity — made differentiable by taking the log-sum-exp over the
      pairs instead of the max; mean over the outlier batch; weight lambda_D (default 1). We use the
      predictions, not the input gradients, because EDM's aim is that members *answer* differently
      on out-of-distribution queries (gradient diversity needs double back-propagation, several
      times the cost, for a property the served answers do not show directly). Probability
      vectors are non-negative, so their cosine lies in [0, 1]: 0 only when members put their
      mass on different classes, 1 when they agree — a uniform answer from every member would not
      lower it, unlike OE's target.
    - Routing: keyed BLAKE2b of the query's float32 bytes, mod K (:func:`route`); the paper says
      "a hash function" — a cryptographic one makes the member a pseudo-random function of the
      input, maximally discontinuous, and the same query always gets the same answer.
    - Score: ``disagreement`` = 'cosine' by default: 1 - mean pairwise cosine similarity of the
      members' probabilities. It is the quantity the training shapes (continuous, so few ties
      and a meaningful ROC); the mean, not the max, over pairs gives a steadier score. 'vote'
      (1 - mean pairwise agreement of the argmax) takes only K(K-1)/2 + 1 values; 'variance'
      (sum over classes of the variance across members) is the usual ensemble-uncertainty choice.
      The SAME paper says only that the score "is smaller when models agree".
    """

    replaces_victim = True
    needs_network = True
    needs_outliers = True

    def setup(self, ctx: DetectorContext) -> None:
        import torch

        super().setup(ctx)
        with torch.random.fork_rng(devices=[]):  # different initialisations, global RNG untouched
            torch.manual_seed(ctx.seed)
            self.members_ = [ctx.make_network() for _ in range(self.params.members)]
        for net in self.members_:
            net.eval()
        self.route_key_ = int(ctx.seed)

    def _fit(self, ctx: DetectorContext) -> None:
        import torch
        import torch.nn.functional as F

        recipe = resolved_recipe(self.params, ctx)
        weight = self.params.diversity_weight
        members = self.members_

        def step_loss(x, y, x_out):
            batch = torch.cat([x, x_out])
            logits = [net(batch) for net in members]
            accuracy = sum(F.cross_entropy(z[: len(x)], y) for z in logits)
            probs_out = torch.stack([torch.softmax(z[len(x):], dim=1) for z in logits])
            coherence = torch.logsumexp(pairwise_cosine(probs_out), dim=0).mean()
            return accuracy + weight * coherence

        self.train_loss_ = train_with_outliers(members, ctx, recipe, step_loss, desc="training EDM ensemble")

    def state(self) -> dict[str, Any]:
        return {"members": [net.state_dict() for net in self.members_], "route_key": self.route_key_}

    def load_state(self, state: dict[str, Any]) -> None:
        if len(state["members"]) != len(self.members_):
            raise ValueError(f"saved EDM has {len(state['members'])} members, the params ask for {len(self.members_)}")
        for net, sd in zip(self.members_, state["members"]):
            net.load_state_dict(sd)
            net.eval()
        self.route_key_ = int(state["route_key"])

    def member_probabilities(self, x: np.ndarray) -> np.ndarray:
        """(K, n, C) probabilities of every member."""
        return np.stack([network_probabilities(net, x) for net in self.members_])

    def route(self, x: np.ndarray) -> np.ndarray:
        """Index of the member that answers each query."""
        return route(x, len(self.members_), self.route_key_)

    def serving_predict(self, x: np.ndarray) -> np.ndarray:
        chosen = self.route(x)
        out = np.empty((len(x), self._ctx.nb_classes), dtype=np.float64)
        for k in np.unique(chosen):
            rows = chosen == k
            out[rows] = network_probabilities(self.members_[k], x[rows])
        return out

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty((0,))
        probs = self.member_probabilities(x)
        if self.params.disagreement == "cosine":
            return 1.0 - pairwise_cosine(probs).mean(axis=0)
        if self.params.disagreement == "variance":
            return probs.var(axis=0).sum(axis=1)
        top = probs.argmax(axis=2)
        rows, cols = np.triu_indices(len(probs), 1)
        return 1.0 - (top[rows] == top[cols]).mean(axis=0)
