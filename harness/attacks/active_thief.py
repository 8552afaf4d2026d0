"""ActiveThief (Pal et al., AAAI 2020): choose which proxy-pool samples to query, round by round.

The attacker starts from a random seed set of the pool, then runs rounds: train the thief on
every answer so far, score the samples not yet queried with the thief, query the next batch
(``round_size``) of the best-scored ones. Strategies:

* ``random``: a uniform draw of the remaining pool (the baseline; KnockoffNets' random
  strategy with a round-by-round training schedule);
* ``uncertainty``: the highest entropy of the thief's softmax;
* ``kcenter``: greedy k-center on the thief's penultimate features (the input of its last
  linear layer): each pick is the remaining sample farthest from everything queried or
  picked so far;
* ``dfal``: the smallest DeepFool perturbation that flips the thief's label (ART's
  :class:`~art.attacks.evasion.DeepFool` on the thief), i.e. the samples closest to its
  decision boundary.

Budgets are exact: every checkpoint is a round boundary, each pool sample is queried at most
once, and at checkpoint b the thief has been trained on the answers to exactly b queries.
"""

from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from art.attacks.attack import ExtractionAttack
from art.attacks.evasion import DeepFool
from art.estimators.classification.classifier import ClassifierMixin

from stealcheck.thief import ThiefClassifier

from .art_extraction import pool_thief
from .base import AttackContext, CheckpointedExtraction, seed_everything
from .specs import ActiveThiefParams

STRATEGIES = ("random", "uncertainty", "kcenter", "dfal")
DFAL_GRADS = 4  # DeepFool's nb_grads: the thief's top classes it searches a boundary towards
# dfal scores this many random unqueried samples per round unless `candidates` says otherwise: ART's DeepFool
# took 60-300 s per round for the 1,500+ samples of the digits pool on 2 busy CPU cores
DFAL_CANDIDATES = 500


def round_boundaries(checkpoints: list[int], seed_size: int, round_size: int) -> list[int]:
    """Query counts after which the thief is trained: the seed set, every ``round_size`` queries after
    it, and every checkpoint (so that each checkpoint ends a round), up to the largest checkpoint."""
    largest = checkpoints[-1]
    grid = set(range(min(seed_size, largest), largest + 1, round_size))
    return sorted(grid | set(checkpoints) | {largest})


def penultimate_features(thief: ThiefClassifier, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The input of the thief's last ``nn.Linear`` for every row of ``x`` (its logits where it has none)."""
    net = thief.model
    head = [m for m in net.modules() if isinstance(m, nn.Linear)]
    seen: list[torch.Tensor] = []
    hook = head[-1].register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach())) if head else None
    try:
        logits = thief.predict(x.astype(np.float32), batch_size=batch_size)
    finally:
        if hook is not None:
            hook.remove()
    if not seen:
        return np.asarray(logits, dtype=np.float64)
    return torch.cat(seen).flatten(1).double().numpy()


def kcenter_picks(candidates: np.ndarray, centers: np.ndarray, k: int) -> np.ndarray:
    """Greedy k-center: ``k`` indices into ``candidates``, each the farthest (Euclidean) from ``centers``
    and the earlier picks."""
    cand = torch.from_numpy(np.asarray(candidates, dtype=np.float64))
    if len(centers):
        nearest = torch.cdist(cand, torch.from_numpy(np.asarray(centers, dtype=np.float64))).min(dim=1).values
    else:
        nearest = torch.full((len(cand),), float("inf"), dtype=torch.float64)
    picks = []
    for _ in range(k):
        i = int(torch.argmax(nearest))
        picks.append(i)
        nearest = torch.minimum(nearest, torch.cdist(cand, cand[i:i + 1]).squeeze(1))
        nearest[i] = -1.0  # never picked twice (a duplicate of a pick is at distance 0 anyway)
    return np.asarray(picks, dtype=int)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``probs``."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


class ActiveThief(ExtractionAttack, CheckpointedExtraction):
    """ActiveThief's rounds (train, score the unqueried pool, query the best batch) as an ART ``ExtractionAttack``.

    ``extract(x, thieved_classifier=...)`` queries ``nb_stolen`` samples of the pool ``x`` and returns the
    trained thief; ``iter_checkpoints`` yields it at every budget. After a run, ``queried_index_`` holds
    the pool indices queried, in order, and ``queried_y_`` the answers the thief was trained on.
    """

    attack_params = ExtractionAttack.attack_params + [
        "batch_size_fit", "batch_size_query", "nb_epochs", "nb_stolen", "strategy", "seed_size", "round_size",
        "use_probability", "candidates", "deepfool_max_iter", "from_scratch", "verbose"]
    _estimator_requirements = ()

    def __init__(self, classifier, batch_size_fit: int = 64, batch_size_query: int = 256, nb_epochs: int = 10,
                 nb_stolen: int = 1, strategy: str = "kcenter", seed_size: int = 100, round_size: int = 100,
                 use_probability: bool = True, candidates: int | None = None, deepfool_max_iter: int = 10,
                 from_scratch: bool = True, verbose: bool = False) -> None:
        super().__init__(estimator=classifier)
        self.batch_size_fit = batch_size_fit
        self.batch_size_query = batch_size_query
        self.nb_epochs = nb_epochs
        self.nb_stolen = nb_stolen
        self.strategy = strategy
        self.seed_size = seed_size
        self.round_size = round_size
        self.use_probability = use_probability
        self.candidates = candidates
        self.deepfool_max_iter = deepfool_max_iter
        self.from_scratch = from_scratch
        self.verbose = verbose
        self._check_params()

    def _check_params(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"The 'strategy' parameter of ActiveThief must be one of {', '.join(STRATEGIES)}. "
                             f"Got {self.strategy!r} instead.")
        for name in ("batch_size_fit", "batch_size_query", "nb_epochs", "nb_stolen", "seed_size", "round_size",
                     "deepfool_max_iter"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"The '{name}' parameter of ActiveThief must be a positive integer. "
                                 f"Got {value!r} instead.")
        if self.candidates is not None and (not isinstance(self.candidates, int) or self.candidates <= 0):
            raise ValueError(f"The 'candidates' parameter of ActiveThief must be a positive integer or None. "
                             f"Got {self.candidates!r} instead.")
        for name in ("use_probability", "from_scratch"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"The '{name}' parameter of ActiveThief must be a bool. Got {getattr(self, name)!r} "
                                 "instead.")

    def extract(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> ClassifierMixin:
        """ART's ``extract``: ``nb_stolen`` queries chosen from the pool ``x``; the trained thief."""
        return self._run_to(self.nb_stolen, x=x, y=y, thieved_classifier=kwargs.get("thieved_classifier"))

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier) -> Iterator[tuple[int, ClassifierMixin]]:
        if not isinstance(thieved_classifier, ClassifierMixin):
            raise ValueError("ActiveThief needs a thieved_classifier (an ART classifier it trains and scores with).")
        if x is None or len(x) < checkpoints[-1]:
            raise ValueError(f"ActiveThief needs a pool x of at least {checkpoints[-1]} samples (the largest "
                             f"checkpoint). Got {'none' if x is None else len(x)}.")
        return self._rounds(checkpoints, np.asarray(x, dtype=np.float32), thieved_classifier)

    def _rounds(self, checkpoints: list[int], x: np.ndarray, thief) -> Iterator[tuple[int, ClassifierMixin]]:
        remaining = np.ones(len(x), dtype=bool)
        queried: list[int] = []
        answers: list[np.ndarray] = []
        self.queried_index_ = np.zeros(0, dtype=int)
        self.queried_y_ = np.zeros((0, self.estimator.nb_classes), dtype=np.float32)
        # from_scratch: every round trains the thief from its initial weights, as the paper retrains
        initial = copy.deepcopy(thief.model.state_dict()) if self.from_scratch and hasattr(thief, "model") else None
        for boundary in round_boundaries(checkpoints, self.seed_size, self.round_size):
            want = boundary - len(queried)
            pick = self._select(x, remaining, want, queried, thief, first=not queried)
            remaining[pick] = False
            answers.append(self._query(x[pick]))
            queried.extend(int(i) for i in pick)
            self.queried_index_ = np.asarray(queried, dtype=int)
            self.queried_y_ = np.concatenate(answers)
            if initial is not None:
                thief.model.load_state_dict(initial)
            thief.fit(x[self.queried_index_], self.queried_y_, batch_size=self.batch_size_fit, nb_epochs=self.nb_epochs)
            if boundary in checkpoints:
                yield boundary, thief

    def _query(self, x: np.ndarray) -> np.ndarray:
        answers = np.asarray(self.estimator.predict(x=x, batch_size=self.batch_size_query), dtype=np.float32)
        if not self.use_probability:
            answers = np.eye(self.estimator.nb_classes, dtype=np.float32)[np.argmax(answers, axis=1)]
        return answers

    def _select(self, x: np.ndarray, remaining: np.ndarray, k: int, queried: list[int], thief, first: bool) -> np.ndarray:
        """``k`` pool indices among the remaining ones, by the strategy (a uniform draw for the seed set)."""
        left = np.flatnonzero(remaining)
        if first or self.strategy == "random":
            return np.random.choice(left, size=k, replace=False)
        pool = left
        limit = self.candidates if self.candidates is not None else DFAL_CANDIDATES if self.strategy == "dfal" else None
        if limit is not None and len(left) > max(limit, k):
            pool = np.sort(np.random.choice(left, size=limit, replace=False))
        if self.strategy == "uncertainty":
            probs = thief.predict_proba(x[pool]) if hasattr(thief, "predict_proba") else _softmax(thief.predict(x[pool]))
            order = np.argsort(-entropy(probs), kind="stable")
            return pool[order[:k]]
        if self.strategy == "kcenter":
            feats = penultimate_features(thief, np.concatenate([x[pool], x[queried]]))
            return pool[kcenter_picks(feats[:len(pool)], feats[len(pool):], k)]
        # dfal: the smallest DeepFool perturbation that flips the thief's label, towards its DFAL_GRADS most likely
        # other classes (the nearest boundary is almost always among them; all ten cost ~3x the time)
        deepfool = DeepFool(classifier=thief, max_iter=self.deepfool_max_iter, epsilon=1e-6,
                            nb_grads=min(thief.nb_classes, DFAL_GRADS), batch_size=256, verbose=False)
        adv = deepfool.generate(x[pool])
        distance = np.linalg.norm((adv - x[pool]).reshape(len(pool), -1), axis=1)
        flipped = np.argmax(thief.predict(adv), axis=1) != np.argmax(thief.predict(x[pool]), axis=1)
        distance[~flipped] = np.inf  # no flip within max_iter: far from the boundary
        order = np.argsort(distance, kind="stable")
        return pool[order[:k]]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ActiveThiefAttack:
    """ActiveThief (Pal et al. 2020): rounds of train, score the unqueried pool, query the most useful batch."""

    extraction_class = ActiveThief

    def __init__(self, params: ActiveThiefParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ThiefClassifier]]:
        p, spec = self.params, ctx.thief_spec
        if ctx.pool is None:
            raise ValueError("activethief needs an attacker pool (data.attacker)")
        seed_everything(ctx.seed)
        attack = ActiveThief(
            classifier=ctx.oracle, batch_size_fit=spec.batch_size, batch_size_query=p.batch_size_query,
            nb_epochs=spec.epochs, nb_stolen=max(ctx.budgets), strategy=p.strategy, seed_size=p.seed_size,
            round_size=p.round_size, use_probability=p.use_probability, candidates=p.candidates,
            deepfool_max_iter=p.deepfool_max_iter, from_scratch=p.from_scratch, verbose=ctx.progress)
        yield from attack.iter_checkpoints(ctx.budgets, x=ctx.pool.x, thieved_classifier=pool_thief(ctx))
