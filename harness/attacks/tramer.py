"""Tramèr et al.'s attacks on simple models behind a prediction API (USENIX Security 2016).

* :class:`EquationSolving` (plugin ``equation_solving``): binary logistic regression solved exactly
  from d + 1 queries (log p1/p0 = w.x + b is linear); softmax, one-vs-rest logistic regression and
  a one-hidden-layer MLP fitted to the returned probabilities by minimising cross-entropy
  (L-BFGS-B, tiny L2). Queries are uniform in the feature box.
* :class:`LowdMeek` (plugin ``lowd_meek``): label-only attack on a binary linear classifier: sign
  witnesses, then binary search for boundary points, then the hyperplane through them.
* :class:`Retraining` (plugin ``retraining``): uniform, line-search or adaptive retraining of a
  model of a chosen family on the victim's probabilities or labels; works against any victim.

Decision-tree path finding is in :mod:`.tramer_trees`. All attacks are ART ``ExtractionAttack``s;
they only call ``estimator.predict`` (and ``query_leaves`` for trees), so every query is counted
by stealcheck's oracle. Extracted models are :class:`~.tramer_models.ExtractedClassifier`s.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, Sequence

import numpy as np
from art.attacks.attack import ExtractionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator


from .base import AttackContext, CheckpointedExtraction
from .tramer_models import (ACTIVATIONS, FAMILIES, SATURATION, ExtractedClassifier, LogitSolution, ModelFamily,
                            fit_cross_entropy, solve_binary_logit)
from .specs import EquationSolvingParams, LowdMeekParams, RetrainingParams, check_feature_box

__all__ = ["FeatureBox", "EquationSolving", "LowdMeek", "Retraining", "parameter_error", "direction_cosine",
           "check_feature_box"]


# ---------------------------------------------------------------- shared pieces


class FeatureBox:
    """The region queries are drawn from: per-feature [low, high] on flat inputs of dimension d."""

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)

    @classmethod
    def resolve(cls, box: Sequence[Sequence[float]] | None, d: int, clip_values) -> "FeatureBox":
        """``None`` = the victim's input range; one [low, high] pair for every feature; or one pair per feature."""
        if box is None:
            if clip_values is None:
                raise ValueError("the victim declares no input range; give a feature_box")
            lo, hi = float(np.min(clip_values[0])), float(np.max(clip_values[1]))
            return cls(np.full(d, lo), np.full(d, hi))
        pairs = np.asarray(box, dtype=np.float64).reshape(-1, 2)
        if len(pairs) == 1:
            pairs = np.repeat(pairs, d, axis=0)
        if len(pairs) != d:
            raise ValueError(f"The 'feature_box' has {len(pairs)} [low, high] pairs; the victim's input has {d} "
                             "features.")
        if np.any(pairs[:, 0] >= pairs[:, 1]):
            raise ValueError(f"The 'feature_box' needs low < high for every feature. Got {pairs.tolist()} instead.")
        return cls(pairs[:, 0], pairs[:, 1])

    @property
    def d(self) -> int:
        return len(self.low)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, self.d))

    def basis(self) -> np.ndarray:
        """d + 1 best-conditioned points: the low corner, then one step across the box along each axis."""
        return np.vstack([self.low, self.low + np.diag(self.high - self.low)])


def parameter_error(family: ModelFamily, theta: np.ndarray, reference: dict | None) -> dict[str, float]:
    """Max and relative error of extracted linear parameters vs the victim's (evaluation only: the runner
    calls it through the copy's ``compare_with_victim``; attacks never see the victim's parameters).

    Softmax parameters are identifiable only up to a shift shared by all classes: both sides are
    centred over classes first. Empty when the victim is not of the same linear family.
    """
    if not reference or family.kind == "mlp" or reference.get("family") != family.kind:
        return {}
    w_hat, b_hat = family.unpack(theta)
    w, b = np.asarray(reference["W"]), np.asarray(reference["b"])
    if w.shape != w_hat.shape:
        return {}
    if family.kind == "softmax":
        w, w_hat = w - w.mean(axis=1, keepdims=True), w_hat - w_hat.mean(axis=1, keepdims=True)
        b, b_hat = b - b.mean(), b_hat - b_hat.mean()
    true = np.concatenate([w.ravel(), b.ravel()])
    got = np.concatenate([w_hat.ravel(), b_hat.ravel()])
    return {"param_max_abs_error": float(np.max(np.abs(true - got))),
            "param_rel_error": float(np.linalg.norm(true - got) / max(np.linalg.norm(true), 1e-300))}


def _check_positive_int(owner: str, name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"The '{name}' parameter of {owner} must be a positive integer. Got {value!r} instead.")


def _flat_dim(estimator) -> int:
    return int(np.prod(estimator.input_shape))


# ---------------------------------------------------------------- equation solving


class EquationSolving(ExtractionAttack, CheckpointedExtraction):
    """Tramèr et al.'s equation-solving attack on models that return class probabilities.

    ``binary_lr``: each answer gives one linear equation log(f1(x) / f0(x)) = w.x + b, so d + 1
    queries in general position recover (w, b) exactly (least squares beyond). ``softmax``, ``ovr``
    and ``mlp``: the extracted model minimises the mean cross-entropy between the answers and its
    own probabilities, plus ``l2``/2 times its squared weights (L-BFGS-B; strongly convex for the
    linear families). Queries are drawn uniformly from the feature box (``query_design="basis"``
    starts with the d + 1 best-conditioned points instead: the box's low corner and one step along
    each axis, the best-conditioned system); at each checkpoint b of ``iter_checkpoints`` the model is
    fitted on the first b answers (warm-started from the previous fit). The attacker is assumed to know the model family
    (and, for the mlp, the hidden width and activation), as in the paper.

    ``binary_lr`` copies also report how far the solve can be trusted (``solve_residual``,
    ``condition_number``, ``saturated_share``: see :class:`~.tramer_models.LogitSolution`), and the
    attack logs a warning on the ``stealcheck`` logger when answers saturate, the system is
    ill-conditioned or underdetermined, or the answers fit no single logistic regression.
    """

    attack_params = ExtractionAttack.attack_params + [
        "family", "hidden", "activation", "l2", "max_iter", "restarts", "feature_box", "query_design", "seed",
        "batch_size_query"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier, family: str = "softmax", hidden: int = 20, activation: str = "relu",
                 l2: float = 1e-8, max_iter: int = 5000, restarts: int = 1,
                 feature_box: Sequence[Sequence[float]] | None = None, query_design: str = "uniform",
                 seed: int = 0, batch_size_query: int = 1024) -> None:
        super().__init__(estimator=classifier)
        self.family = family
        self.hidden = hidden
        self.activation = activation
        self.l2 = l2
        self.max_iter = max_iter
        self.restarts = restarts
        self.feature_box = feature_box
        self.query_design = query_design
        self.seed = seed
        self.batch_size_query = batch_size_query
        self._check_params()
        self.model_ = ModelFamily(family, _flat_dim(classifier), classifier.nb_classes,
                                  hidden if family == "mlp" else 0, activation)
        self.box_ = FeatureBox.resolve(feature_box, self.model_.d, classifier.clip_values)

    def _check_params(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"The 'family' parameter of EquationSolving must be one of {', '.join(FAMILIES)}. "
                             f"Got {self.family!r} instead.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"The 'activation' parameter of EquationSolving must be one of "
                             f"{', '.join(ACTIVATIONS)}. Got {self.activation!r} instead.")
        for name in ("hidden", "max_iter", "restarts", "batch_size_query"):
            _check_positive_int("EquationSolving", name, getattr(self, name))
        if self.query_design not in ("uniform", "basis"):
            raise ValueError(f"The 'query_design' parameter of EquationSolving must be 'uniform' or 'basis'. "
                             f"Got {self.query_design!r} instead.")
        if not (isinstance(self.l2, (int, float)) and self.l2 >= 0):
            raise ValueError(f"The 'l2' parameter of EquationSolving must be a non-negative number. "
                             f"Got {self.l2!r} instead.")
        if self.family == "binary_lr" and self.estimator.nb_classes != 2:
            raise ValueError(f"The 'binary_lr' family of EquationSolving needs a victim with 2 classes; this one "
                             f"has {self.estimator.nb_classes}. Use softmax, ovr or mlp.")

    def fit_answers(self, x: np.ndarray, answers: np.ndarray, theta0: np.ndarray | None = None) -> np.ndarray:
        """The extracted parameters from queries ``x`` (n x d) and the victim's answers."""
        return self._fit(x, answers, theta0)[0]

    def _fit(self, x: np.ndarray, answers: np.ndarray, theta0: np.ndarray | None = None
             ) -> tuple[np.ndarray, LogitSolution | None]:
        """(parameters, the binary solve's diagnostics or None for the fitted families)."""
        if self.family == "binary_lr":
            solution = solve_binary_logit(x, answers)
            return solution.theta, solution
        return fit_cross_entropy(self.model_, x, answers, l2=self.l2, theta0=theta0, max_iter=self.max_iter,
                                 restarts=self.restarts, seed=self.seed)[0], None

    def as_classifier(self, theta: np.ndarray, queries: int, solution: LogitSolution | None = None
                      ) -> ExtractedClassifier:
        """The extracted model as an ART classifier, with its figures (unknowns, and for binary_lr the
        solve's diagnostics); the runner compares its parameters with the victim's (``parameter_error``)."""
        family = self.model_
        metrics = {"unknowns": float(family.unknowns), "queries_per_unknown": queries / family.unknowns}
        if solution is not None:
            metrics.update(solve_residual=solution.residual, condition_number=solution.condition,
                           saturated_share=solution.saturated / max(1, solution.n))
        copy = ExtractedClassifier(lambda x: family.proba(theta, x), self.estimator.input_shape, family.c,
                                   self.estimator.clip_values, metrics, description=f"equation solving ({family.kind})",
                                   compare=lambda reference: parameter_error(family, theta, reference))
        copy.model_family, copy.theta = family, theta  # for white-box use: tramer_models.as_pytorch_classifier
        return copy

    def _ask(self, x: np.ndarray) -> np.ndarray:
        shaped = x.reshape(len(x), *self.estimator.input_shape).astype(np.float32)
        # the answer is to the float32 input actually sent: fit on exactly that (answers are float64)
        return np.asarray(self.estimator.predict(shaped, batch_size=self.batch_size_query), dtype=np.float64)

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier) -> Iterator[tuple[int, ExtractedClassifier]]:
        """Query uniformly in the box (``x``, ``y`` and ``thieved_classifier`` unused); fit at every checkpoint."""
        rng = np.random.default_rng(self.seed)
        x_all = self.box_.sample(max(checkpoints), rng)
        if self.query_design == "basis":
            x_all = np.vstack([self.box_.basis(), x_all])[:max(checkpoints)]
        x_all = x_all.astype(np.float32).astype(np.float64)
        answers: list[np.ndarray] = []
        theta = None
        for b in checkpoints:
            have = sum(len(a) for a in answers)
            if b > have:
                answers.append(self._ask(x_all[have:b]))
            theta, solution = self._fit(x_all[:b], np.concatenate(answers), theta0=theta)
            _warn_untrustworthy(solution, self.model_.unknowns)
            yield b, self.as_classifier(theta, b, solution)

    def extract(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> ExtractedClassifier:
        """Query the victim on ``x`` (``y`` unused) and solve for the model."""
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1).astype(np.float64)
        theta, solution = self._fit(x, self._ask(x))
        _warn_untrustworthy(solution, self.model_.unknowns)
        return self.as_classifier(theta, len(x), solution)


log = logging.getLogger("stealcheck")

#: Above this condition number of [x, 1], float64 answers (relative precision ~1e-16) no longer bound
#: the parameter error below ~1e-8.
ILL_CONDITIONED = 1e8
#: RMS logit residual above which the answers fit no single logistic regression: exact float64 answers
#: give ~1e-14 and float32 ones ~1e-8, while rounding to 4 decimals already gives 1e-4 to 1e-3.
INCONSISTENT = 1e-6


def _warn_untrustworthy(solution: LogitSolution | None, unknowns: int) -> None:
    """Log a warning (the run's run.log) when a binary solve cannot be trusted.

    The checks go from the cause an auditor can fix to the bare symptom: saturated answers (the
    feature box reaches where the sigmoid is flat), too few queries, near-dependent queries, and
    answers that disagree with one another (a defence rounded or perturbed them, or the victim is
    not a logistic regression).
    """
    if solution is None:
        return
    s, n = solution, solution.n
    if s.saturated:
        # a square system's residual is ~0 whatever the answers: quote it only when it says something
        residual = f" (solve_residual {s.residual:.3g})" if n > unknowns else ""
        log.warning("equation_solving (binary_lr): the victim's probabilities saturate on this feature box: %d of %d "
                    "answers are within %.0e of 0 or 1, where log(p1/p0) is lost (or a defence rounded them), so the "
                    "extracted parameters can be far off%s; narrow feature_box toward the data",
                    s.saturated, n, SATURATION, residual)
    elif n < unknowns:
        log.warning("equation_solving (binary_lr): %d queries for %d unknowns: the parameters are not determined "
                    "(the minimum-norm solution is returned); give a budget of at least %d", n, unknowns, unknowns)
    elif s.condition > ILL_CONDITIONED:
        log.warning("equation_solving (binary_lr): the queries are nearly linearly dependent (condition number "
                    "%.3g), so small answer errors become large parameter errors; widen feature_box or use "
                    "query_design: basis", s.condition)
    elif s.residual > INCONSISTENT:
        log.warning("equation_solving (binary_lr): the %d answers fit no single logistic regression (solve_residual "
                    "%.3g in logit units; exact answers give ~1e-14): they are rounded or perturbed, or the victim "
                    "is not a binary logistic regression", n, s.residual)


# ---------------------------------------------------------------- Lowd-Meek


class LowdMeek(ExtractionAttack, CheckpointedExtraction):
    """Lowd and Meek's label-only attack on a binary linear classifier, as Tramèr et al. run it.

    Random points in the box are labelled until both classes are seen; each becomes a *sign
    witness* paired with a point of the other class. A binary search on the segment between the
    two finds a point on the decision boundary to relative precision ``eps`` (about log2(1/eps)
    queries). The hyperplane through ``nb_boundary`` such points (least squares: the smallest
    singular vector of [X, 1]) is the extracted boundary, oriented by a witness. The copy answers
    labels only (one-hot): nothing in a label reveals the victim's scale.
    """

    attack_params = ExtractionAttack.attack_params + ["eps", "nb_boundary", "feature_box", "seed"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier, eps: float = 1e-6, nb_boundary: int | None = None,
                 feature_box: Sequence[Sequence[float]] | None = None, seed: int = 0) -> None:
        super().__init__(estimator=classifier)
        self.eps = eps
        self.nb_boundary = nb_boundary
        self.feature_box = feature_box
        self.seed = seed
        self._check_params()
        self.box_ = FeatureBox.resolve(feature_box, _flat_dim(classifier), classifier.clip_values)

    def _check_params(self) -> None:
        if not (isinstance(self.eps, float) and 0 < self.eps < 0.5):
            raise ValueError(f"The 'eps' parameter of LowdMeek must be a float in (0, 0.5). Got {self.eps!r} instead.")
        if self.nb_boundary is not None:
            _check_positive_int("LowdMeek", "nb_boundary", self.nb_boundary)
        if self.estimator.nb_classes != 2:
            raise ValueError(f"LowdMeek attacks binary linear classifiers; this victim has "
                             f"{self.estimator.nb_classes} classes.")

    @property
    def steps(self) -> int:
        """Binary-search steps per boundary point."""
        return int(math.ceil(math.log2(1.0 / self.eps)))

    @property
    def target(self) -> int:
        """Boundary points the attack looks for: ``nb_boundary``, or d + 1."""
        return self.nb_boundary or self.box_.d + 1

    def _labels(self, x: np.ndarray) -> np.ndarray:
        shaped = x.reshape(len(x), *self.estimator.input_shape).astype(np.float32)
        return np.argmax(self.estimator.predict(shaped), axis=1)

    def _copy(self, w: np.ndarray, b: float, queries: int, points: int) -> ExtractedClassifier:
        def proba(x: np.ndarray) -> np.ndarray:
            positive = (x @ w + b) > 0
            return np.stack([~positive, positive], axis=1).astype(np.float64)

        metrics = {"unknowns": float(len(w) + 1), "queries_per_unknown": queries / (len(w) + 1),
                   "boundary_points": float(points)}
        return ExtractedClassifier(proba, self.estimator.input_shape, 2, self.estimator.clip_values, metrics,
                                   description="Lowd-Meek", compare=lambda reference: direction_cosine(w, reference))

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier) -> Iterator[tuple[int, ExtractedClassifier]]:
        """Yield (budget, copy) at every checkpoint; the copy uses the boundary points found so far
        (``x``, ``y`` and ``thieved_classifier`` unused).

        Each checkpoint's budget is spent on complete boundary searches (witness + ``steps``
        queries); the attack stops asking when ``nb_boundary`` points are found.
        """
        d = self.box_.d
        target = self.target
        rng = np.random.default_rng(self.seed)
        used = 0
        witnesses: list[np.ndarray] = []
        labels: list[int] = []
        boundary: list[np.ndarray] = []
        anchor: dict[int, np.ndarray] = {}  # one known point of each class
        w, b = np.zeros(d), 0.0
        for budget in checkpoints:
            while len(boundary) < target and used < budget:
                # sign witnesses: random points until both classes have been seen
                if len(anchor) < 2:
                    x = self.box_.sample(1, rng)
                    y = int(self._labels(x)[0])
                    used += 1
                    anchor.setdefault(y, x[0])
                    witnesses.append(x[0])
                    labels.append(y)
                    continue
                pending = [(x, y) for x, y in zip(witnesses, labels)]
                witnesses, labels = [], []
                if not pending:
                    x = self.box_.sample(1, rng)
                    pending = [(x[0], int(self._labels(x)[0]))]
                    used += 1
                n = min(len(pending), target - len(boundary), (budget - used) // self.steps)
                if n <= 0:
                    witnesses, labels = [p[0] for p in pending], [p[1] for p in pending]
                    break
                pos = np.stack([p[0] if p[1] == 1 else anchor[1] for p in pending[:n]])
                neg = np.stack([p[0] if p[1] == 0 else anchor[0] for p in pending[:n]])
                witnesses, labels = [p[0] for p in pending[n:]], [p[1] for p in pending[n:]]
                lo, hi = np.zeros(n), np.ones(n)  # t: 0 = positive end, 1 = negative end
                for _ in range(self.steps):  # the n searches run in parallel, one batch per step
                    mid = (lo + hi) / 2
                    positive = self._labels(pos + mid[:, None] * (neg - pos)) == 1
                    used += n
                    lo, hi = np.where(positive, mid, lo), np.where(positive, hi, mid)
                t = (lo + hi) / 2
                boundary.extend(pos + t[:, None] * (neg - pos))
            if len(boundary) >= 2:
                a = np.hstack([np.stack(boundary), np.ones((len(boundary), 1))])
                v = np.linalg.svd(a)[2][-1]
                w, b = v[:-1], float(v[-1])
                if anchor.get(1) is not None and anchor[1] @ w + b < 0:
                    w, b = -w, -b
            yield budget, self._copy(w, b, used, len(boundary))

    def extract(self, x: np.ndarray | None = None, y: np.ndarray | None = None, **kwargs) -> ExtractedClassifier:
        """Run the attack to the end (``x`` and ``y`` unused: the attack makes its own queries)."""
        return self._run_to(self.target * (self.steps + 1))


def norm(v: np.ndarray) -> float:
    return float(np.linalg.norm(v))


def direction_cosine(w: np.ndarray, reference: dict | None) -> dict[str, float]:
    """Cosine between an extracted weight vector and a binary linear victim's (evaluation only: labels
    fix the boundary's direction, not its scale). Empty for other victims or a zero vector."""
    if not reference or reference.get("family") != "binary_lr" or norm(w) == 0:
        return {}
    w_true = np.asarray(reference["W"]).ravel()
    return {"direction_cosine": float(w @ w_true / (norm(w) * norm(w_true)))}


# ---------------------------------------------------------------- retraining

STRATEGIES = ("uniform", "line_search", "adaptive")


class Retraining(ExtractionAttack, CheckpointedExtraction):
    """Retraining attacks (Tramèr et al. §6): fit a model of a chosen family to the victim's answers.

    * ``uniform``: all queries uniform in the feature box;
    * ``line_search``: ``uniform_share`` of the budget uniform, the rest spent on parallel binary
      searches (``search_steps`` each) between random pairs of queried points the victim labels
      differently, so that queries gather near its decision boundaries;
    * ``adaptive``: in rounds of ``round_size`` queries; after a uniform first round, each round
      spends ``uniform_share`` uniform and the rest on the candidates (``candidates`` x as many,
      drawn uniformly, never sent) where the current copy is least certain (smallest margin between
      its two most likely classes); the copy is refitted after every round.

    The copy minimises cross-entropy to the answers (probabilities, or one-hot labels when
    ``use_probability`` is false or the API serves labels) plus ``l2``/2 times its squared weights.
    """

    attack_params = ExtractionAttack.attack_params + [
        "strategy", "family", "hidden", "activation", "l2", "max_iter", "use_probability", "uniform_share",
        "round_size", "candidates", "search_steps", "feature_box", "seed"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier, strategy: str = "adaptive", family: str = "softmax", hidden: int = 20,
                 activation: str = "relu", l2: float = 1e-4, max_iter: int = 1000, use_probability: bool = True,
                 uniform_share: float = 0.25, round_size: int = 100, candidates: int = 10, search_steps: int = 8,
                 feature_box: Sequence[Sequence[float]] | None = None, seed: int = 0) -> None:
        super().__init__(estimator=classifier)
        self.strategy = strategy
        self.family = family
        self.hidden = hidden
        self.activation = activation
        self.l2 = l2
        self.max_iter = max_iter
        self.use_probability = use_probability
        self.uniform_share = uniform_share
        self.round_size = round_size
        self.candidates = candidates
        self.search_steps = search_steps
        self.feature_box = feature_box
        self.seed = seed
        self._check_params()
        self.model_ = ModelFamily(family, _flat_dim(classifier), classifier.nb_classes,
                                  hidden if family == "mlp" else 0, activation)
        self.box_ = FeatureBox.resolve(feature_box, self.model_.d, classifier.clip_values)

    def _check_params(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"The 'strategy' parameter of Retraining must be one of {', '.join(STRATEGIES)}. "
                             f"Got {self.strategy!r} instead.")
        if self.family not in FAMILIES:
            raise ValueError(f"The 'family' parameter of Retraining must be one of {', '.join(FAMILIES)}. "
                             f"Got {self.family!r} instead.")
        for name in ("hidden", "max_iter", "round_size", "candidates", "search_steps"):
            _check_positive_int("Retraining", name, getattr(self, name))
        if not 0 <= self.uniform_share <= 1:
            raise ValueError(f"The 'uniform_share' parameter of Retraining must lie in [0, 1]. "
                             f"Got {self.uniform_share!r} instead.")
        if not self.l2 >= 0:
            raise ValueError(f"The 'l2' parameter of Retraining must be non-negative. Got {self.l2!r} instead.")

    def _ask(self, x: np.ndarray) -> np.ndarray:
        shaped = x.reshape(len(x), *self.estimator.input_shape).astype(np.float32)
        out = np.asarray(self.estimator.predict(shaped), dtype=np.float64)
        if self.use_probability:
            return out
        return np.eye(out.shape[1])[np.argmax(out, axis=1)]

    def _copy(self, theta: np.ndarray, queries: int) -> ExtractedClassifier:
        family = self.model_
        metrics = {"unknowns": float(family.unknowns), "queries_per_unknown": queries / family.unknowns}
        return ExtractedClassifier(lambda x: family.proba(theta, x), self.estimator.input_shape, family.c,
                                   self.estimator.clip_values, metrics, description=f"retraining ({self.strategy})")

    def _line_search_points(self, x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Spend ``n`` queries on binary searches between differently-labelled pairs of (x, y)."""
        labels = np.argmax(y, axis=1)
        xs, ys = [], []
        while n > 0:
            pairs = max(1, min(n // self.search_steps, 256))
            i = rng.integers(len(x), size=4 * pairs)
            j = rng.integers(len(x), size=4 * pairs)
            differ = labels[i] != labels[j]
            if not differ.any():  # one class seen so far: uniform queries instead
                new = self.box_.sample(n, rng)
                xs.append(new)
                ys.append(self._ask(new))
                break
            a, b = x[i[differ][:pairs]], x[j[differ][:pairs]]
            la = labels[i[differ][:pairs]]
            lo, hi = np.zeros(len(a)), np.ones(len(a))
            for _ in range(min(self.search_steps, n // len(a)) or 1):
                take = min(len(a), n)
                mid = (lo[:take] + hi[:take]) / 2
                pts = a[:take] + mid[:, None] * (b[:take] - a[:take])
                ans = self._ask(pts)
                xs.append(pts)
                ys.append(ans)
                n -= take
                same = np.argmax(ans, axis=1) == la[:take]
                lo[:take], hi[:take] = np.where(same, mid, lo[:take]), np.where(same, hi[:take], mid)
                if n <= 0:
                    break
        return np.concatenate(xs), np.concatenate(ys)

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier) -> Iterator[tuple[int, ExtractedClassifier]]:
        """Query, refit, and yield (budget, copy) at every checkpoint (``x``, ``y``, ``thieved_classifier`` unused)."""
        rng = np.random.default_rng(self.seed)
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        theta = None
        used = 0

        def add(x: np.ndarray, y: np.ndarray | None = None) -> None:
            nonlocal used
            xs.append(x)
            ys.append(self._ask(x) if y is None else y)
            used += len(x)

        def refit() -> None:
            nonlocal theta
            theta = fit_cross_entropy(self.model_, np.concatenate(xs), np.concatenate(ys), l2=self.l2,
                                      theta0=theta, max_iter=self.max_iter, seed=self.seed)[0]

        for budget in checkpoints:
            if self.strategy == "uniform":
                if budget > used:
                    add(self.box_.sample(budget - used, rng))
            elif self.strategy == "line_search":
                # of each checkpoint's new queries, uniform_share uniform, the rest on boundary searches
                n_new = budget - used
                n_unif = min(n_new, max(2 if not xs else 0, int(round(self.uniform_share * n_new))))
                if n_unif:
                    add(self.box_.sample(n_unif, rng))
                if budget > used:
                    add(*self._line_search_points(np.concatenate(xs), np.concatenate(ys), budget - used, rng))
            else:  # adaptive
                while used < budget:
                    n = min(self.round_size, budget - used)
                    if theta is None:
                        add(self.box_.sample(n, rng))
                    else:
                        n_unif = int(round(self.uniform_share * n))
                        pool = self.box_.sample(self.candidates * (n - n_unif), rng)
                        p = self.model_.proba(theta, pool)
                        top2 = np.sort(p, axis=1)[:, -2:]
                        uncertain = pool[np.argsort(top2[:, 1] - top2[:, 0])[: n - n_unif]]
                        add(np.concatenate([uncertain, self.box_.sample(n_unif, rng)]))
                    if used < budget:
                        refit()
            refit()
            yield budget, self._copy(theta, used)

    def extract(self, x: np.ndarray | None = None, y: np.ndarray | None = None, **kwargs) -> ExtractedClassifier:
        """Run the attack with ``max_queries`` queries (default 1,000; ``x``, ``y`` unused)."""
        return self._run_to(int(kwargs.get("max_queries", 1000)))


# ---------------------------------------------------------------- plugins


class EquationSolvingAttack:
    """Tramèr et al.'s equation solving: exact binary LR from d+1 queries; softmax/OvR LR and MLP by cross-entropy fit."""

    extraction_class = EquationSolving

    def __init__(self, params: EquationSolvingParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ExtractedClassifier]]:
        p = self.params
        attack = EquationSolving(ctx.oracle, family=p.model, hidden=p.hidden, activation=p.activation, l2=p.l2,
                                 max_iter=p.max_iter, restarts=p.restarts, feature_box=p.feature_box,
                                 query_design=p.query_design, seed=ctx.seed)
        yield from attack.iter_checkpoints(ctx.budgets)


class LowdMeekAttack:
    """Lowd-Meek label-only attack on binary linear classifiers: sign witnesses and boundary binary searches."""

    extraction_class = LowdMeek

    def __init__(self, params: LowdMeekParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ExtractedClassifier]]:
        p = self.params
        attack = LowdMeek(ctx.oracle, eps=p.eps, nb_boundary=p.nb_boundary, feature_box=p.feature_box,
                          seed=ctx.seed)
        yield from attack.iter_checkpoints(ctx.budgets)


class RetrainingAttack:
    """Tramèr et al.'s retraining (uniform, line-search, adaptive) on probabilities or labels, for any victim."""

    extraction_class = Retraining

    def __init__(self, params: RetrainingParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ExtractedClassifier]]:
        p = self.params
        attack = Retraining(ctx.oracle, strategy=p.strategy, family=p.model, hidden=p.hidden, activation=p.activation,
                            l2=p.l2, max_iter=p.max_iter, use_probability=p.use_probability,
                            uniform_share=p.uniform_share, round_size=p.round_size, candidates=p.candidates,
                            search_steps=p.search_steps, feature_box=p.feature_box, seed=ctx.seed)
        yield from attack.iter_checkpoints(ctx.budgets)
