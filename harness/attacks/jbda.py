"""Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017) and its PRADA variants.

The attacker starts from a small seed set of in-distribution inputs labelled by the victim, and
grows it round by round: each input x gets a neighbour x' = clip(x + lambda * sign(dF_y/dx)),
where F is the attacker's *substitute* (its softmax output) and y the victim's label for x. Only
the new points are sent to the victim, so the set (and the query count) doubles each round.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from art.attacks.attack import ExtractionAttack
from art.estimators.classification import PyTorchClassifier
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator

from stealcheck.thief import ThiefClassifier

from .base import AttackContext, CheckpointedExtraction, seed_everything
from .specs import JBDAParams

VARIANTS = ("jbda", "jb-self", "jb-topk")


def softmax_class_gradient(model: torch.nn.Module, x: np.ndarray, labels: np.ndarray,
                           batch_size: int = 256) -> np.ndarray:
    """d softmax(model(x))[label] / dx for each row (the model outputs logits)."""
    grads = []
    was_training = model.training
    model.eval()
    for start in range(0, len(x), batch_size):
        xb = torch.tensor(x[start:start + batch_size], dtype=torch.float32, requires_grad=True)
        probs = torch.softmax(model(xb), dim=1)
        chosen = probs[torch.arange(len(xb)), torch.as_tensor(labels[start:start + batch_size])]
        (grad,) = torch.autograd.grad(chosen.sum(), xb)
        grads.append(grad.numpy())
    model.train(was_training)
    return np.concatenate(grads) if grads else np.empty_like(x)


class JacobianAugmentation(ExtractionAttack, CheckpointedExtraction):
    """Papernot et al.'s substitute training with Jacobian-based dataset augmentation.

    Variants (Juuti et al., PRADA, EuroS&P 2019):

    * ``jbda``: x' = clip(x + lambda_r * sign(dF_y(x)/dx)), y = the victim's label of x;
    * ``jb-self``: the step goes the other way, x - lambda_r * sign(...): away from the
      substitute's confidence in the victim's label, towards the decision boundary;
    * ``jb-topk``: a targeted step towards one of the substitute's ``top_k`` most likely other
      classes (chosen round-robin over rounds), as ``topk_steps`` iterations of projected sign
      gradient ascent on log F_target within an L-inf ball of radius lambda.

    ``lambda_r = step_size * (-1) ** (r // sign_period)`` flips the step's sign every
    ``sign_period`` rounds (None: never), as the prediction-poisoning code does with tau. With a
    ``reservoir_size`` kappa, from round ``reservoir_after`` (sigma) on only kappa random points
    of the set are augmented per round, which bounds the cost of later rounds.

    ``keep_saturated`` (an adaptive attacker's knob, not in the papers): features that sit exactly
    at an end of the input range (a digit's black background, a saturated stroke) are left where
    they are, so only the features in between move. It answers a detector that models benign
    data's exact background (the ``fusion`` detector's ``pixel_atoms``) at the price of steps with
    fewer moving features; ``fusion``'s ``intensity_knn`` signal answers it in turn.

    The substitute is ``thieved_classifier``, an ART ``PyTorchClassifier`` whose module outputs
    logits; F is its softmax. It is trained with ``fit(x, answers, batch_size, nb_epochs)`` on
    every labelled point before each augmentation and at each budget checkpoint. The victim is
    only asked for outputs (``predict``), never gradients, so any ART classifier can be the
    victim. Queries: ``len(seed) * 2 ** nb_rounds`` without a reservoir, and never more than
    the largest checkpoint (at most ``nb_stolen``): the last batch is cut to fit, so the count hits
    each checkpoint exactly when the rounds would go past it.
    """

    attack_params = ExtractionAttack.attack_params + [
        "nb_stolen", "variant", "nb_rounds", "step_size", "nb_epochs", "batch_size_fit", "batch_size_query",
        "sign_period", "reservoir_size", "reservoir_after", "top_k", "topk_steps", "use_probability", "seed",
        "keep_saturated",
    ]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier, nb_stolen: int, variant: str = "jbda", nb_rounds: int | None = 6,
                 step_size: float = 0.1, nb_epochs: int = 10, batch_size_fit: int = 128,
                 batch_size_query: int = 256, sign_period: int | None = None, reservoir_size: int | None = None,
                 reservoir_after: int = 3, top_k: int = 3, topk_steps: int = 5, use_probability: bool = False,
                 seed: int = 0, keep_saturated: bool = False) -> None:
        super().__init__(estimator=classifier)
        self.keep_saturated = keep_saturated
        self.nb_stolen = nb_stolen
        self.variant = variant
        self.nb_rounds = nb_rounds
        self.step_size = step_size
        self.nb_epochs = nb_epochs
        self.batch_size_fit = batch_size_fit
        self.batch_size_query = batch_size_query
        self.sign_period = sign_period
        self.reservoir_size = reservoir_size
        self.reservoir_after = reservoir_after
        self.top_k = top_k
        self.topk_steps = topk_steps
        self.use_probability = use_probability
        self.seed = seed
        self._check_params()

    def _check_params(self) -> None:
        def positive_int(name: str, value, allow_none: bool = False) -> None:
            if allow_none and value is None:
                return
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"The '{name}' parameter of JacobianAugmentation must be a positive integer"
                                 f"{' or None' if allow_none else ''}. Got {value!r} instead.")

        for name in ("nb_stolen", "nb_epochs", "batch_size_fit", "batch_size_query", "top_k", "topk_steps"):
            positive_int(name, getattr(self, name))
        for name in ("nb_rounds", "sign_period", "reservoir_size"):
            positive_int(name, getattr(self, name), allow_none=True)
        if not isinstance(self.reservoir_after, (int, np.integer)) or self.reservoir_after < 0:
            raise ValueError("The 'reservoir_after' parameter of JacobianAugmentation must be a non-negative "
                             f"integer. Got {self.reservoir_after!r} instead.")
        if self.variant not in VARIANTS:
            raise ValueError(f"The 'variant' parameter of JacobianAugmentation must be one of {', '.join(VARIANTS)}. "
                             f"Got {self.variant!r} instead.")
        if not (isinstance(self.step_size, (int, float)) and self.step_size > 0):
            raise ValueError(f"The 'step_size' parameter of JacobianAugmentation must be a positive number. "
                             f"Got {self.step_size!r} instead.")
        if not isinstance(self.keep_saturated, bool):
            raise ValueError(f"The 'keep_saturated' parameter of JacobianAugmentation must be a boolean. "
                             f"Got {self.keep_saturated!r} instead.")

    # ------------------------------------------------------------------ augmentation

    def step_sign(self, round_index: int) -> float:
        """+1 or -1: the sign schedule of round ``round_index`` (0-based)."""
        if self.sign_period is None:
            return 1.0
        return -1.0 if (round_index // self.sign_period) % 2 else 1.0

    def augment(self, substitute: PyTorchClassifier, x: np.ndarray, labels: np.ndarray,
                round_index: int) -> np.ndarray:
        """New points for the inputs ``x`` whose victim labels are ``labels`` (one per input)."""
        moved = self._augment(substitute, x, labels, round_index)
        if self.keep_saturated:
            lo, hi = self._clip()
            moved = np.where((x > lo) & (x < hi), moved, x).astype(np.float32)
        return moved

    def _augment(self, substitute: PyTorchClassifier, x: np.ndarray, labels: np.ndarray,
                 round_index: int) -> np.ndarray:
        lam = self.step_size * self.step_sign(round_index)
        lo, hi = self._clip()
        model = substitute.model
        if self.variant in ("jbda", "jb-self"):
            grad = softmax_class_gradient(model, x, labels)
            direction = 1.0 if self.variant == "jbda" else -1.0
            return np.clip(x + direction * lam * np.sign(grad), lo, hi).astype(np.float32)
        # jb-topk: targeted towards one of the substitute's top-k classes other than the victim's label.
        logits = np.asarray(substitute.predict(x, batch_size=self.batch_size_query))
        order = np.argsort(-logits, axis=1)
        targets = np.empty(len(x), dtype=np.int64)
        pick = round_index % self.top_k
        for i, row in enumerate(order):
            others = row[row != labels[i]][: self.top_k]
            targets[i] = others[pick % len(others)]
        radius = abs(lam)
        step = radius / self.topk_steps * 2.0  # overshoot the ball, then project: reaches its edge quickly
        x_adv = x.copy()
        for _ in range(self.topk_steps):
            grad = softmax_class_gradient(model, x_adv, targets)
            x_adv = x_adv + np.sign(lam) * step * np.sign(grad)
            x_adv = np.clip(np.clip(x_adv, x - radius, x + radius), lo, hi)
        return x_adv.astype(np.float32)

    def _clip(self) -> tuple[float, float]:
        clip = self.estimator.clip_values
        if clip is None:
            return -np.inf, np.inf
        return float(np.min(clip[0])), float(np.max(clip[1]))

    # ------------------------------------------------------------------ the attack

    def _answer(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.estimator.predict(x, batch_size=self.batch_size_query), dtype=np.float32)
        if self.use_probability:
            return out
        return np.eye(self.estimator.nb_classes, dtype=np.float32)[np.argmax(out, axis=1)]

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier: PyTorchClassifier) -> Iterator[tuple[int, PyTorchClassifier]]:
        """Run the attack from the seed set ``x`` (``y`` unused: the victim labels the seeds).

        If the rounds end (``nb_rounds``) before a checkpoint is reached, the final substitute is
        yielded for every remaining checkpoint, having used fewer queries than the checkpoint.
        """
        if x is None:
            raise ValueError("JacobianAugmentation needs the seed set x.")
        if not isinstance(thieved_classifier, PyTorchClassifier):
            raise ValueError("JacobianAugmentation needs a PyTorchClassifier substitute (its Jacobian is computed "
                             f"with torch). Got {type(thieved_classifier).__name__} instead.")
        rng = np.random.default_rng(self.seed)
        pending = list(checkpoints)
        last = checkpoints[-1]
        inputs: list[np.ndarray] = []
        answers: list[np.ndarray] = []
        used = 0
        trained_on = -1  # the query count the substitute was last trained at

        def train() -> None:
            nonlocal trained_on
            if trained_on == used:  # a checkpoint just trained it on exactly these points
                return
            thieved_classifier.fit(np.concatenate(inputs), np.concatenate(answers),
                                   batch_size=self.batch_size_fit, nb_epochs=self.nb_epochs)
            trained_on = used

        def query(new: np.ndarray) -> Iterator[tuple[int, PyTorchClassifier]]:
            """Ask the victim about ``new`` up to the budget, training and yielding at checkpoints."""
            nonlocal used
            start = 0
            while start < len(new) and used < last:
                stop_at = pending[0] if pending else last
                take = min(len(new) - start, stop_at - used)
                chunk = new[start:start + take]
                inputs.append(chunk)
                answers.append(self._answer(chunk))
                used += take
                start += take
                if pending and used == pending[0]:
                    pending.pop(0)
                    train()
                    yield used, thieved_classifier

        seed_x = np.asarray(x, dtype=np.float32)
        yield from query(seed_x)
        round_index = 0
        while used < last and (self.nb_rounds is None or round_index < self.nb_rounds):
            train()
            current = np.concatenate(inputs)
            labels = np.argmax(np.concatenate(answers), axis=1)
            if self.reservoir_size is not None and round_index >= self.reservoir_after \
                    and len(current) > self.reservoir_size:
                keep = rng.choice(len(current), self.reservoir_size, replace=False)
                current, labels = current[keep], labels[keep]
            yield from query(self.augment(thieved_classifier, current, labels, round_index))
            round_index += 1
        if pending:
            train()
            for budget in pending:
                yield budget, thieved_classifier

    def extract(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> PyTorchClassifier:
        """Extract a substitute from the seed set ``x`` with ``nb_stolen`` queries at most (``y`` unused: the
        victim labels the seeds).

        :param thieved_classifier: the substitute, an ART PyTorchClassifier outputting logits.
        """
        thieved_classifier = kwargs.get("thieved_classifier")
        if thieved_classifier is None:
            raise ValueError("A thieved classifier is needed.")
        return self._run_to(self.nb_stolen, x=x, thieved_classifier=thieved_classifier)


class JBDAAttack:
    """Jacobian-based dataset augmentation (Papernot et al. 2017) with PRADA's jb-self and jb-topk variants."""

    extraction_class = JacobianAugmentation

    def __init__(self, params: JBDAParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ThiefClassifier]]:
        p = self.params
        if ctx.load_data is None:
            raise ValueError("JBDA needs the scenario's data sets for its seeds")
        seeds = ctx.load_data(p.seed_data)
        if len(seeds) < p.seed_size:
            raise ValueError(f"data set '{p.seed_data}' holds {len(seeds)} samples; JBDA asked for {p.seed_size} seeds")
        seed_everything(ctx.seed)
        chosen = np.random.default_rng(ctx.seed).choice(len(seeds), p.seed_size, replace=False)
        attack = JacobianAugmentation(
            classifier=ctx.oracle, nb_stolen=max(ctx.budgets), variant=p.variant, nb_rounds=p.nb_rounds,
            step_size=p.step_size, nb_epochs=p.nb_epochs, batch_size_fit=ctx.thief_spec.batch_size,
            batch_size_query=p.batch_size_query, sign_period=p.sign_period, reservoir_size=p.reservoir_size,
            reservoir_after=p.reservoir_after, top_k=p.top_k, topk_steps=p.topk_steps,
            use_probability=p.use_probability, seed=ctx.seed, keep_saturated=p.keep_saturated)
        yield from attack.iter_checkpoints(ctx.budgets, x=seeds.x[chosen], thieved_classifier=ctx.make_thief())
