"""Decision-tree path finding (Tramèr et al. 2016, §4.2) against an API that returns leaf ids.

BigML's API answered each query with the id of the leaf it reached (and that leaf's confidences).
Every leaf of an axis-aligned tree is a box, so along any line parallel to an axis the leaf id is
constant on intervals, and two points with the same id have the same id everywhere between
them. The attack explores the input box region by region:

1. in a region R with a representative query q, for each feature, find every point along the
   axis line through q (within R) where the id changes, by bisection to precision ``eps``;
2. if some feature's line crosses several ids, split R there (a node of the extracted tree with
   that feature's thresholds) and explore each part with q moved into it;
3. otherwise R lies in a single leaf (a box containing every axis segment through q is contained
   in that leaf), whose answer becomes a leaf of the extracted tree.

``variant="path"`` uses complete queries only. ``variant="top_down"`` uses *incomplete* queries
(missing features as NaN), which stop at the first node that splits on a missing feature: it
starts from the empty query (the root), and a missing feature costs a single query to test
whether the current node splits on it, instead of a line search. Features already set are still
line-searched within the region, since nodes further down may split on them again.

The extracted tree predicts like the victim everywhere except within ``eps`` of a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
from art.attacks.attack import ExtractionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator


from .base import AttackContext, CheckpointedExtraction
from .tramer import FeatureBox, _flat_dim
from .tramer_models import ExtractedClassifier
from .specs import PathFindingParams

__all__ = ["PathFinding", "TreeNode", "PathFindingParams", "PathFindingAttack"]

VARIANTS = ("path", "top_down")


class _OutOfBudget(Exception):
    """The query limit of this pass is reached."""


@dataclass
class TreeNode:
    """A node of the extracted tree: a leaf (victim leaf id and its answer) or a split of one feature
    into ``len(thresholds) + 1`` parts (x <= thresholds[0], ..., x > thresholds[-1])."""

    leaf_id: int | None = None
    proba: np.ndarray | None = None
    feature: int = -1
    thresholds: list[float] = field(default_factory=list)
    children: list["TreeNode"] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def leaves(self) -> list["TreeNode"]:
        return [self] if self.is_leaf else [leaf for c in self.children for leaf in c.leaves()]

    def splits(self) -> list[tuple[int, float]]:
        """Every (feature, threshold) of the tree."""
        if self.is_leaf:
            return []
        return [(self.feature, t) for t in self.thresholds] + [s for c in self.children for s in c.splits()]

    def predict_proba(self, x: np.ndarray, nb_classes: int) -> np.ndarray:
        out = np.empty((len(x), nb_classes))
        self._fill(x, np.arange(len(x)), out)
        return out

    def _fill(self, x: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
        if self.is_leaf:
            out[rows] = self.proba
            return
        # the victim sends x <= t left; part k holds thresholds[k-1] < x <= thresholds[k]
        part = np.searchsorted(np.asarray(self.thresholds), x[rows, self.feature].astype(np.float32), side="left")
        for k, child in enumerate(self.children):
            sel = rows[part == k]
            if len(sel):
                child._fill(x, sel, out)


class PathFinding(ExtractionAttack, CheckpointedExtraction):
    """Tramèr et al.'s path-finding attack on decision trees behind a leaf-id API (see the module doc).

    The estimator must offer ``query_leaves(x) -> (node ids, probabilities)`` (stealcheck's oracle in
    the ``leaf`` output mode). Answers are cached, so no input is paid for twice; each checkpoint of
    ``iter_checkpoints`` re-runs the (deterministic) exploration with a larger query limit, and the regions left
    unexplored when the limit is reached become leaves answering as their representative query.
    """

    attack_params = ExtractionAttack.attack_params + ["variant", "eps", "feature_box"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier, variant: str = "path", eps: float = 1e-4,
                 feature_box: Sequence[Sequence[float]] | None = None) -> None:
        super().__init__(estimator=classifier)
        self.variant = variant
        self.eps = eps
        self.feature_box = feature_box
        self._check_params()
        self.box_ = FeatureBox.resolve(feature_box, _flat_dim(classifier), classifier.clip_values)
        self._answers: dict[bytes, tuple[int, np.ndarray]] = {}
        self._limit = 0

    def _check_params(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"The 'variant' parameter of PathFinding must be one of {', '.join(VARIANTS)}. "
                             f"Got {self.variant!r} instead.")
        if not (isinstance(self.eps, float) and 0 < self.eps < 1):
            raise ValueError(f"The 'eps' parameter of PathFinding must be a float in (0, 1). Got {self.eps!r} instead.")
        if not callable(getattr(self.estimator, "query_leaves", None)) \
                or getattr(self.estimator, "output_mode", "leaf") != "leaf":
            raise ValueError("PathFinding needs an API that returns leaf ids (query_leaves); serve a decision-tree "
                             f"victim with output: leaf. Got {type(self.estimator).__name__} instead.")

    # ---------------------------------------------------------------- queries

    @property
    def queries(self) -> int:
        """Distinct inputs paid for so far."""
        return len(self._answers)

    def _ask(self, q: np.ndarray) -> tuple[int, np.ndarray]:
        q = q.astype(np.float32)
        key = q.tobytes()
        if key not in self._answers:
            if len(self._answers) >= self._limit:
                raise _OutOfBudget
            ids, probs = self.estimator.query_leaves(q.reshape(1, *self.estimator.input_shape))
            self._answers[key] = (int(ids[0]), np.asarray(probs[0], dtype=np.float64))
        return self._answers[key]

    def _with(self, q: np.ndarray, f: int, value: float) -> np.ndarray:
        out = q.copy()
        out[f] = value
        return out.astype(np.float32)

    def _line(self, q: np.ndarray, f: int, lo: float, hi: float) -> list[tuple[float, float, int]]:
        """Segments (first value, last value, id) along feature f through q on [lo, hi], split where the id
        changes; each boundary is bracketed to ``eps``."""
        points: dict[float, int] = {}

        def ask(v: float) -> int:
            v = float(np.float32(v))
            if v not in points:
                points[v] = self._ask(self._with(q, f, v))[0]
            return points[v]

        stack = [(float(np.float32(lo)), float(np.float32(hi)))]
        while stack:
            a, b = stack.pop()
            if ask(a) == ask(b) or b - a <= self.eps:
                continue
            m = float(np.float32((a + b) / 2))
            if m <= a or m >= b:  # float32 resolution reached
                continue
            stack += [(a, m), (m, b)]
        segments: list[tuple[float, float, int]] = []
        for v in sorted(points):
            if segments and segments[-1][2] == points[v]:
                segments[-1] = (segments[-1][0], v, points[v])
            else:
                segments.append((v, v, points[v]))
        return segments

    # ---------------------------------------------------------------- exploration

    def _leaf(self, q: np.ndarray, node_id: int, probs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> TreeNode:
        if np.isnan(probs).any():  # an incomplete query: one complete query inside the region for the answer
            node_id, probs = self._ask(np.where(np.isnan(q), (lo + hi) / 2, q))
        return TreeNode(leaf_id=node_id, proba=probs)

    def _explore(self, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> TreeNode:
        try:
            node_id, probs = self._ask(q)
        except _OutOfBudget:
            return TreeNode(leaf_id=-1, proba=np.full(self.estimator.nb_classes, 1.0 / self.estimator.nb_classes))
        try:
            for f in range(len(q)):
                if np.isnan(q[f]):  # top-down: does this node split on the missing feature f?
                    if self._ask(self._with(q, f, (lo[f] + hi[f]) / 2))[0] == node_id:
                        continue
                elif lo[f] == hi[f]:
                    continue
                segments = self._line(q, f, lo[f], hi[f])
                if len(segments) == 1 and not np.isnan(q[f]):
                    continue
                return self._split(q, f, segments, lo, hi)
            return self._leaf(q, node_id, probs, lo, hi)
        except _OutOfBudget:
            # The limit cut this region short: it answers as its representative (or uniformly if incomplete).
            if np.isnan(probs).any():
                probs = np.full(self.estimator.nb_classes, 1.0 / self.estimator.nb_classes)
            return TreeNode(leaf_id=node_id, proba=probs)

    def _split(self, q: np.ndarray, f: int, segments: list[tuple[float, float, int]], lo: np.ndarray,
               hi: np.ndarray) -> TreeNode:
        node = TreeNode(feature=f)
        for k, (first, last, _) in enumerate(segments):
            if k:
                node.thresholds.append((segments[k - 1][1] + first) / 2)
            sub_lo, sub_hi = lo.copy(), hi.copy()
            sub_lo[f], sub_hi[f] = first, last
            node.children.append(self._explore(self._with(q, f, first), sub_lo, sub_hi))
        return node

    def explore(self, limit: int) -> TreeNode:
        """The extracted tree after at most ``limit`` distinct queries (answers of earlier passes are reused)."""
        self._limit = limit
        d = self.box_.d
        if self.variant == "top_down":
            start = np.full(d, np.nan)
        else:
            start = ((self.box_.low + self.box_.high) / 2).astype(np.float32).astype(np.float64)
        return self._explore(start.astype(np.float64), self.box_.low.copy(), self.box_.high.copy())

    def as_classifier(self, tree: TreeNode) -> ExtractedClassifier:
        nb_classes = self.estimator.nb_classes
        leaves = tree.leaves()
        found = {leaf.leaf_id for leaf in leaves if leaf.leaf_id is not None and leaf.leaf_id >= 0}
        metrics = {"leaves_found": float(len(found)), "extracted_leaves": float(len(leaves)),
                   "queries_per_leaf": self.queries / max(1, len(found))}
        copy = ExtractedClassifier(lambda x: tree.predict_proba(x, nb_classes), self.estimator.input_shape,
                                   nb_classes, self.estimator.clip_values, metrics,
                                   description=f"path finding ({self.variant})")
        copy.tree = tree
        return copy

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier) -> Iterator[tuple[int, ExtractedClassifier]]:
        """Yield (budget, extracted tree) at every checkpoint (``x``, ``y``, ``thieved_classifier`` unused)."""
        for budget in checkpoints:
            yield budget, self.as_classifier(self.explore(budget))

    def extract(self, x: np.ndarray | None = None, y: np.ndarray | None = None, **kwargs) -> ExtractedClassifier:
        """Extract the whole tree (``x``, ``y`` unused; ``max_queries`` caps the queries, default no cap)."""
        return self.as_classifier(self.explore(int(kwargs.get("max_queries", 10 ** 9))))


class PathFindingAttack:
    """Tramèr et al.'s decision-tree path finding against a leaf-id API (output: leaf), complete or top-down."""

    extraction_class = PathFinding

    def __init__(self, params: PathFindingParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ExtractedClassifier]]:
        p = self.params
        attack = PathFinding(ctx.oracle, variant=p.variant, eps=p.eps, feature_box=p.feature_box)
        yield from attack.iter_checkpoints(ctx.budgets)
