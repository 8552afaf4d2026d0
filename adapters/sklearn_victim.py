"""scikit-learn victims (trained here or loaded from a trusted file) as ART classifiers."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from art.estimators.classification import SklearnClassifier

from stealcheck.cache import file_digest, fingerprint
from stealcheck.errors import ScenarioError
from stealcheck.preflight import regular_file
from stealcheck.victim import Victim, VictimContext
from .specs import SKLEARN_THIEF, SklearnVictimParams


def _estimator(name: str, params: dict[str, Any], seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    if name == "logistic_regression_ovr":
        try:
            return OneVsRestClassifier(LogisticRegression(**{"max_iter": 2000, **params}))
        except TypeError as exc:
            raise ScenarioError(f"bad model_params for {name}: {exc}", path="victim.model_params") from None
    defaults: dict[str, tuple[type, dict]] = {
        "logistic_regression": (LogisticRegression, {"max_iter": 2000}),
        "mlp": (MLPClassifier, {"hidden_layer_sizes": (20,), "max_iter": 1000, "random_state": seed}),
        "decision_tree": (DecisionTreeClassifier, {"random_state": seed}),
        "random_forest": (RandomForestClassifier, {"n_estimators": 50, "random_state": seed}),
        "svc": (SVC, {"probability": True, "random_state": seed}),
    }
    cls, kw = defaults[name]
    try:
        return cls(**{**kw, **params})
    except TypeError as exc:
        raise ScenarioError(f"bad model_params for {name}: {exc}", path="victim.model_params") from None


def tree_node_ids(model, x: np.ndarray) -> np.ndarray:
    """The node a decision tree reaches for each row of ``x``: a leaf id, as BigML's API returned.

    Missing features (NaN) make an *incomplete* query: it stops at the first node that splits on a
    missing feature and returns that internal node's id (BigML's semantics, which the top-down
    path-finding attack relies on). Comparisons are made in float32, as scikit-learn's trees make them.
    """
    tree = model.tree_
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    rows = np.arange(len(x))
    node = np.zeros(len(x), dtype=np.int64)
    while True:
        internal = tree.children_left[node] != -1
        value = x[rows, np.where(internal, tree.feature[node], 0)]
        move = internal & ~np.isnan(value)
        if not move.any():
            return node
        left = value <= tree.threshold[node]
        node = np.where(move, np.where(left, tree.children_left[node], tree.children_right[node]), node)


def linear_parameters(model) -> dict[str, Any] | None:
    """White-box parameters of a logistic-regression victim as {family, W (d x k), b (k)}, else None.

    Only the evaluation uses them (parameter error of an extracted copy); no attack gets them.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    if isinstance(model, LogisticRegression):
        family = "binary_lr" if model.coef_.shape[0] == 1 else "softmax"
        return {"family": family, "W": model.coef_.T.astype(np.float64), "b": model.intercept_.astype(np.float64)}
    if isinstance(model, OneVsRestClassifier) and all(isinstance(e, LogisticRegression) for e in model.estimators_) \
            and len(model.estimators_) > 1:
        return {"family": "ovr", "W": np.hstack([e.coef_.T for e in model.estimators_]).astype(np.float64),
                "b": np.concatenate([e.intercept_ for e in model.estimators_]).astype(np.float64)}
    return None


class SklearnVictim:
    """A scikit-learn classifier with predict_proba: trained here, or loaded from a trusted pickle/joblib file."""

    @staticmethod
    def build(p: SklearnVictimParams, ctx: VictimContext) -> Victim:
        import joblib

        info: dict[str, Any] = {}
        if p.path is not None:
            path = regular_file(p.path, ctx.base_dir, "model file", "victim.path")
            if not p.trust_pickle:
                raise ScenarioError(f"victim.path names a pickle/joblib file ({path}), and loading one runs code from "
                                    "the file. stealcheck loads it only with trust_pickle: true; set that only if you "
                                    "trust where the file came from.", path="victim.trust_pickle")
            model = joblib.load(path)  # opt-in above: trust_pickle
            info.update(source=str(path), file_sha256=file_digest(path))
        else:
            train = ctx.load_data("victim_train")
            if train.y is None:
                raise ScenarioError("data.victim_train has no labels.", path="data.victim_train")
            key = fingerprint({"kind": "sklearn", "dtype": "float64", "params": p.model_dump(mode="json"),
                               "data": ctx.data_fingerprint("victim_train"), "seed": ctx.seed})
            entry = ctx.cache.path("victims", key)
            # Our own cache entries are written by this process from a fitted estimator: loading them is as
            # trusted as the cache folder itself.
            if p.cache and ctx.cache.has("victims", key):
                model = joblib.load(entry / "model.joblib")
                info.update(json.loads((entry / "meta.json").read_text()), cached=True)
            else:
                model = _estimator(p.model, p.model_params, ctx.seed)
                start = time.perf_counter()
                # float64, as scikit-learn models are usually fitted: a model fitted on float32 data keeps float32
                # parameters and computes its answers in float32, too coarse for exact equation solving.
                model.fit(train.x.reshape(len(train), -1).astype(np.float64), train.y)
                meta = {"train_seconds": round(time.perf_counter() - start, 3), "train_samples": len(train)}
                info.update(meta, cached=False)
                if p.cache:
                    with ctx.cache.writer("victims", key) as tmp:
                        joblib.dump(model, tmp / "model.joblib")
                        (tmp / "meta.json").write_text(json.dumps(meta))
            info["cache_key"] = key
        if not hasattr(model, "predict_proba"):
            raise ScenarioError(f"{type(model).__name__} has no predict_proba; stealcheck needs probabilities "
                                "(for SVC set probability=True).", path="victim.path" if p.path else "victim.model")
        from sklearn.tree import DecisionTreeClassifier

        nb_classes = len(model.classes_)
        classifier = SklearnClassifier(model=model, clip_values=tuple(p.input.range))
        is_tree = isinstance(model, DecisionTreeClassifier)
        if is_tree:
            info.update(tree_leaves=int(model.get_n_leaves()), tree_depth=int(model.get_depth()))
        return Victim(classifier=classifier, nb_classes=nb_classes, input_shape=tuple(p.input.shape),
                      clip_values=tuple(p.input.range), description=f"sklearn {type(model).__name__}",
                      thief_architecture=SKLEARN_THIEF[0], thief_arch_params=dict(SKLEARN_THIEF[1]), info=info,
                      leaf_ids=(lambda x: tree_node_ids(model, x)) if is_tree else None,
                      parameters=linear_parameters(model))
