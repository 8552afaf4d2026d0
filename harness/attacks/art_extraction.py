"""ART's KnockoffNets and CopycatCNN as stealcheck attacks, with budget checkpoints.

Random KnockoffNets and CopycatCNN are called as ART ships them (its ``extract``), once per
checkpoint b, on the first b inputs of a seeded permutation of the attacker's pool
(:class:`NestedPrefixes`): the inputs queried at a smaller checkpoint are a prefix of those at a
larger one, and the attacker's :class:`CachingClient` pays for each input once, so the oracle
counts exactly b queries at checkpoint b.

Both KnockoffNets strategies run in :class:`RobustKnockoffNets`, a subclass of ART's
KnockoffNets; CopycatCNN in :class:`CheckpointedCopycatCNN`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
from art.attacks.extraction import CopycatCNN, KnockoffNets
from art.estimators.classification.classifier import ClassifierMixin

from stealcheck.datasets import Dataset
from stealcheck.oracle import CachingClient
from stealcheck.thief import ThiefClassifier

from .base import AttackContext, CheckpointedExtraction, seed_everything
from .specs import CopycatParams, KnockoffParams, _base_pool


class NestedPrefixes(CheckpointedExtraction):
    """Checkpoints for an ART attack that queries ``nb_stolen`` inputs of ``x`` once (random KnockoffNets,
    CopycatCNN): at checkpoint b, ART's ``extract`` runs on ``x[:b]`` with ``nb_stolen`` = b and
    trains ``thieved_classifier`` further.

    ``x`` should be shuffled (a seeded permutation of the pool) and the estimator a caching client
    (stealcheck's :class:`~stealcheck.oracle.CachingClient`), so that the inputs of a smaller
    checkpoint, a prefix of the larger one's, are paid for once and the victim has answered
    exactly b queries at checkpoint b. ``x`` needs at least as many inputs as the largest checkpoint.
    """

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier) -> Iterator[tuple[int, ClassifierMixin]]:
        if x is None or len(x) < checkpoints[-1]:
            raise ValueError(f"{type(self).__name__} needs x with at least {checkpoints[-1]} inputs (the largest "
                             f"checkpoint). Got {'none' if x is None else len(x)}.")
        nb_stolen = self.nb_stolen
        try:
            for budget in checkpoints:
                self.nb_stolen = budget
                thieved_classifier = self._prefix_extract(x[:budget], thieved_classifier)
                yield budget, thieved_classifier
        finally:
            self.nb_stolen = nb_stolen

    def _prefix_extract(self, x: np.ndarray, thieved_classifier):
        return self.extract(x=x, thieved_classifier=thieved_classifier)


class CheckpointedCopycatCNN(CopycatCNN, NestedPrefixes):
    """ART's ``CopycatCNN`` unchanged, with budget checkpoints on nested prefixes (:class:`NestedPrefixes`)."""


class RobustKnockoffNets(KnockoffNets, NestedPrefixes):
    """ART's ``KnockoffNets`` whose adaptive strategy is safe to run on any victim and pool.

    What differs from ART 1.20.1, and why:

    * the proxy labels ``y`` may be any label set: they are mapped to 0..K-1 (ART needs
      contiguous labels and fails or samples the wrong class otherwise);
    * the reward is made finite and clipped to ``[-reward_clip, reward_clip]`` (ART's ``all``
      reward divides by a running standard deviation that can be 0, giving inf/NaN, and the
      bandit's preferences then overflow ``exp``); the bandit's softmax is computed stably;
    * the ``loss`` reward compares the served probabilities with the softmax of the thief's
      logits (ART applies a softmax to the victim's probabilities as if they were logits);
    * ``use_probability`` is honoured (ART's adaptive loop always trains on hard labels);
    * the online single-sample thief updates are made only for the rewards that read the thief
      (``loss``, ``all``); at each checkpoint the thief is trained on all answers so far, which
      is what ART does once at the end.

    ``iter_checkpoints``: the adaptive strategy runs the bandit once, to the largest checkpoint
    (``x`` the pool, ``y`` its labels); the random strategy runs ART's random extraction on nested
    prefixes of ``x`` (:class:`NestedPrefixes`).
    """

    attack_params = KnockoffNets.attack_params + ["reward_clip"]

    def __init__(self, classifier, batch_size_fit: int = 1, batch_size_query: int = 1, nb_epochs: int = 10,
                 nb_stolen: int = 1, sampling_strategy: str = "adaptive", reward: str = "all",
                 verbose: bool = False, use_probability: bool = False, reward_clip: float = 10.0) -> None:
        self.reward_clip = reward_clip
        super().__init__(classifier=classifier, batch_size_fit=batch_size_fit, batch_size_query=batch_size_query,
                         nb_epochs=nb_epochs, nb_stolen=nb_stolen, sampling_strategy=sampling_strategy,
                         reward=reward, verbose=verbose, use_probability=use_probability)

    def _check_params(self) -> None:
        super()._check_params()
        if not self.reward_clip > 0:
            raise ValueError(f"The 'reward_clip' parameter of RobustKnockoffNets must be positive. "
                             f"Got {self.reward_clip} instead.")

    def _reward(self, y_output: np.ndarray, y_hat: np.ndarray, n: int) -> float:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            reward = float(np.mean(super()._reward(y_output, y_hat, n)))
        reward = np.nan_to_num(reward, nan=0.0, posinf=self.reward_clip, neginf=-self.reward_clip)
        return float(np.clip(reward, -self.reward_clip, self.reward_clip))

    def _reward_loss(self, y_output: np.ndarray, y_hat: np.ndarray) -> float:
        probs_output = np.clip(y_output[0], 0.0, 1.0)
        logits = y_hat[0] - np.max(y_hat[0])
        log_probs_hat = logits - np.log(np.sum(np.exp(logits)))
        return float(-np.sum(probs_output * log_probs_hat))

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier) -> Iterator[tuple[int, ClassifierMixin]]:
        if thieved_classifier is None or not isinstance(thieved_classifier, ClassifierMixin):
            raise ValueError("A thieved classifier is needed.")
        if self.sampling_strategy == "random":
            return NestedPrefixes._iter_checkpoints(self, checkpoints, x=x, y=y,
                                                    thieved_classifier=thieved_classifier)
        if x is None or y is None:
            raise ValueError("The adaptive strategy of RobustKnockoffNets needs the pool x and its labels y.")
        return self._adaptive_checkpoints(checkpoints, x, y, thieved_classifier)

    def _adaptive_checkpoints(self, checkpoints: list[int], x: np.ndarray, y: np.ndarray, thieved_classifier
                              ) -> Iterator[tuple[int, ClassifierMixin]]:
        """The bandit loop; yields (queries so far, thief) at each checkpoint."""
        y = np.argmax(y, axis=1) if y.ndim == 2 else y
        _, y_index = np.unique(y, return_inverse=True)
        nb_actions = int(y_index.max()) + 1
        if self.reward in ("div", "all"):
            self.y_avg = np.zeros(self.estimator.nb_classes)
        if self.reward == "all":
            self.reward_avg = np.zeros(3)
            self.reward_var = np.zeros(3)
        uses_thief = self.reward in ("loss", "all")
        h_func = np.zeros(nb_actions)
        pulls = np.zeros(nb_actions)
        probs = np.full(nb_actions, 1.0 / nb_actions)
        selected_x, answers = [], []
        avg_reward = 0.0
        pending = list(checkpoints)
        from tqdm.auto import trange

        for iteration in trange(1, checkpoints[-1] + 1, desc="knockoff adaptive", disable=not self.verbose,
                                leave=False):
            action = int(np.random.choice(nb_actions, p=probs))
            sampled_x = self._sample_data(x, y_index, action)
            y_output = self.estimator.predict(x=sampled_x[None], batch_size=1)
            served = y_output if self.use_probability else np.eye(self.estimator.nb_classes)[np.argmax(y_output, 1)]
            selected_x.append(sampled_x)
            answers.append(served[0])
            y_hat = np.zeros_like(y_output)
            if uses_thief:
                thieved_classifier.fit(x=sampled_x[None], y=served, batch_size=1, nb_epochs=1)
                y_hat = thieved_classifier.predict(x=sampled_x[None], batch_size=1)
            reward = self._reward(y_output, y_hat, iteration)
            avg_reward += (reward - avg_reward) / iteration
            pulls[action] += 1
            step = (reward - avg_reward) / pulls[action]
            h_func -= step * probs
            h_func[action] += step
            z = np.exp(h_func - h_func.max())
            probs = z / z.sum()
            if pending and iteration == pending[0]:
                pending.pop(0)
                thieved_classifier.fit(x=np.asarray(selected_x), y=np.asarray(answers),
                                       batch_size=self.batch_size_fit, nb_epochs=self.nb_epochs)
                yield iteration, thieved_classifier

    def _adaptive_extraction(self, x: np.ndarray, y: np.ndarray, thieved_classifier):
        """ART's ``extract`` with the adaptive strategy: the bandit run to ``nb_stolen``."""
        return self._run_to(self.nb_stolen, x=x, y=y, thieved_classifier=thieved_classifier)


def knockoff_pool(p: KnockoffParams, ctx: AttackContext) -> Dataset:
    """The proxy pool the attack samples: data.attacker or ``pool_data``, cut by the avoided detector."""
    pool = _base_pool(p, ctx.pool, ctx.load_data)
    if pool is None:
        raise ValueError("knockoff needs an attacker pool (data.attacker or pool_data)")
    if p.avoid_detector is not None:
        if not ctx.detectors or p.avoid_detector not in ctx.detectors:
            known = ", ".join(ctx.detectors or {}) or "none"
            raise ValueError(f"knockoff: avoid_detector '{p.avoid_detector}' is not a fitted detector of this run "
                             f"(fitted: {known}); declare it under detectors:.")
        scores = np.asarray(ctx.detectors[p.avoid_detector].score(pool.x), dtype=np.float64)
        keep = int(np.ceil(p.keep_fraction * len(pool)))
        chosen = np.sort(np.argsort(scores, kind="stable")[:keep])
        pool = pool.subset(chosen, f"{pool.name} (lowest {p.keep_fraction:g} by {p.avoid_detector})")
    if len(pool) < max(ctx.budgets):
        raise ValueError(f"knockoff's pool ({pool.name}) holds {len(pool)} samples, fewer than the largest budget "
                         f"({max(ctx.budgets)}). Lower the budgets, raise keep_fraction or use a larger pool.")
    return pool


def pool_thief(ctx: AttackContext, pool: Dataset | None = None) -> ThiefClassifier:
    """A fresh thief that knows the attacker's pool (``pool`` or ``ctx.pool``) when ``thief.unlabelled`` is on:
    at each fit it trains on the unqueried pool samples without their answers (never a query)."""
    thief = ctx.make_thief()
    pool = pool if pool is not None else ctx.pool
    if ctx.thief_spec.unlabelled is not None and pool is not None:
        thief.attach_pool(pool.x)
    return thief


def _prefix_attack(ctx: AttackContext, make_art_attack) -> Iterator[tuple[int, ThiefClassifier]]:
    """Run a :class:`NestedPrefixes` attack on a seeded permutation of the pool, through a caching client.

    Without ``thief.warm_start`` each checkpoint trains a fresh thief.
    """
    seed_everything(ctx.seed)
    order = np.random.default_rng(ctx.seed).permutation(len(ctx.pool))
    attack = make_art_attack(CachingClient(ctx.oracle))
    x = ctx.pool.x[order[:max(ctx.budgets)]]
    if ctx.thief_spec.warm_start:
        yield from attack.iter_checkpoints(ctx.budgets, x=x, thieved_classifier=pool_thief(ctx))
        return
    for budget in ctx.budgets:
        yield from attack.iter_checkpoints([budget], x=x, thieved_classifier=pool_thief(ctx))


class KnockoffAttack:
    """KnockoffNets (Orekondy et al. 2019) from ART: query a natural proxy pool, train on the answers."""

    extraction_class = RobustKnockoffNets

    def __init__(self, params: KnockoffParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ThiefClassifier]]:
        p, spec = self.params, ctx.thief_spec
        if p.pool_data is not None or p.avoid_detector is not None:
            ctx = dataclasses.replace(ctx, pool=knockoff_pool(p, ctx))
        if p.strategy == "random":
            yield from _prefix_attack(ctx, lambda client: RobustKnockoffNets(
                classifier=client, batch_size_fit=spec.batch_size, batch_size_query=p.batch_size_query,
                nb_epochs=spec.epochs, nb_stolen=max(ctx.budgets), sampling_strategy="random",
                use_probability=p.use_probability))
            return
        if ctx.pool.y is None:
            raise ValueError("adaptive KnockoffNets needs a labelled attacker pool")
        seed_everything(ctx.seed)
        attack = RobustKnockoffNets(
            classifier=ctx.oracle, batch_size_fit=spec.batch_size, batch_size_query=1, nb_epochs=spec.epochs,
            nb_stolen=max(ctx.budgets), sampling_strategy="adaptive", reward=p.reward,
            use_probability=p.use_probability, verbose=ctx.progress)
        yield from attack.iter_checkpoints(ctx.budgets, x=ctx.pool.x, y=ctx.pool.y, thieved_classifier=pool_thief(ctx))


class CopycatAttack:
    """CopycatCNN (Correia-Silva et al. 2018) from ART: label non-problem-domain images with the victim's top class."""

    extraction_class = CheckpointedCopycatCNN

    def __init__(self, params: CopycatParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ThiefClassifier]]:
        p, spec = self.params, ctx.thief_spec
        yield from _prefix_attack(ctx, lambda client: CheckpointedCopycatCNN(
            classifier=client, batch_size_fit=spec.batch_size, batch_size_query=p.batch_size_query,
            nb_epochs=spec.epochs, nb_stolen=max(ctx.budgets), use_probability=p.use_probability))
