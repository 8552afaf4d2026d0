"""scikit-learn victims (trained here or loaded from a trusted file) as ART classifiers."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import numpy as np
from art.estimators.classification import SklearnClassifier
from pydantic import BaseModel, ConfigDict, Field

from stealcheck.cache import file_digest, fingerprint
from stealcheck.datasets import scenario_path
from stealcheck.errors import ScenarioError
from stealcheck.registry import victims
from stealcheck.scenario import InputSpec
from stealcheck.victim import Victim, VictimContext

MODELS = ("logistic_regression", "mlp", "decision_tree", "random_forest", "svc")


class SklearnVictimParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["logistic_regression", "mlp", "decision_tree", "random_forest", "svc"] = Field(
        "logistic_regression", description="model to train from data.victim_train (ignored with path)")
    model_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the estimator")
    path: str | None = Field(None, description="a pickle/joblib file of a fitted estimator (needs trust_pickle)")
    trust_pickle: bool = Field(False, description="allow loading 'path': unpickling runs code from the file, so "
                               "only set this for files you trust")
    input: InputSpec = Field(default_factory=lambda: InputSpec(shape=[4]), description="input shape (d,) and range")
    cache: bool = Field(True, description="cache the trained model")


def _estimator(name: str, params: dict[str, Any], seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

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


@victims.register("sklearn", params=SklearnVictimParams)
class SklearnVictim:
    """A scikit-learn classifier with predict_proba: trained here, or loaded from a trusted pickle/joblib file."""

    @staticmethod
    def needs_training_data(p: SklearnVictimParams) -> bool:
        return p.path is None

    @staticmethod
    def build(p: SklearnVictimParams, ctx: VictimContext) -> Victim:
        import joblib

        info: dict[str, Any] = {}
        if p.path is not None:
            path = scenario_path(p.path, ctx.base_dir)
            if not p.trust_pickle:
                raise ScenarioError("loading a pickle/joblib file runs code from it; set trust_pickle: true only if "
                                    "you trust where the file came from.", path="victim.trust_pickle")
            if not path.exists():
                raise ScenarioError(f"model file not found: {path}", path="victim.path")
            model = joblib.load(path)  # opt-in above: trust_pickle
            info.update(source=str(path), file_sha256=file_digest(path))
        else:
            train = ctx.load_data("victim_train")
            if train.y is None:
                raise ScenarioError("data.victim_train has no labels.", path="data.victim_train")
            key = fingerprint({"kind": "sklearn", "params": p.model_dump(mode="json"),
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
                model.fit(train.x.reshape(len(train), -1), train.y)
                meta = {"train_seconds": round(time.perf_counter() - start, 3), "train_samples": len(train)}
                info.update(meta, cached=False)
                if p.cache:
                    with ctx.cache.writer("victims", key) as tmp:
                        joblib.dump(model, tmp / "model.joblib")
                        (tmp / "meta.json").write_text(json.dumps(meta))
            info["cache_key"] = key
        if not hasattr(model, "predict_proba"):
            raise ScenarioError(f"{type(model).__name__} has no predict_proba; stealcheck needs probabilities "
                                "(for SVC set probability=True).")
        nb_classes = len(model.classes_)
        classifier = SklearnClassifier(model=model, clip_values=tuple(p.input.range))
        return Victim(classifier=classifier, nb_classes=nb_classes, input_shape=tuple(p.input.shape),
                      clip_values=tuple(p.input.range), description=f"sklearn {type(model).__name__}",
                      thief_architecture="mlp", thief_arch_params={"hidden": [64]}, info=info)
