"""The victim adapters' parameters and capabilities, declared without importing torch, ART or scikit-learn.

The adapters themselves (:mod:`.torch_victim`, :mod:`.sklearn_victim`) are imported when a run
first builds a victim.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stealcheck.registry import PARAMS_CONFIG, victims
from stealcheck.scenario import InputSpec


# ---------------------------------------------------------------- torch_victim


class TrainSpec(BaseModel):
    """How stealcheck trains a victim that has no weights file."""

    model_config = PARAMS_CONFIG
    steps: int = Field(800, gt=0, description="optimiser steps")
    batch_size: int = Field(64, gt=0, description="batch size")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (Adam, one-cycle)")


class TorchVictimParams(BaseModel):
    model_config = PARAMS_CONFIG
    architecture: str = Field("conv3", description="conv3 | mlp | resnet18 | timm:NAME | torchvision:NAME | "
                              "package.module:callable")
    arch_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the architecture")
    weights: str | None = Field(None, description="local state_dict file (loaded with weights_only=True); "
                                "null = train from data.victim_train")
    nb_classes: int | None = Field(None, gt=1, description="number of classes; null = from the training labels "
                                   "(required with weights)")
    input: InputSpec = Field(default_factory=InputSpec, description="input shape, range and normalisation")
    train: TrainSpec = Field(default_factory=TrainSpec, description="training recipe when weights is null")
    cache: bool = Field(True, description="cache the trained victim")


victims.declare(
    "torch", "stealcheck.adapters.torch_victim:TorchVictim",
    params=TorchVictimParams,
    needs_training_data=lambda p: p.weights is None,
    thief_architecture=lambda p: (p.architecture, p.arch_params),
    summary="A PyTorch model: built-in conv3/mlp/resnet18, any timm or torchvision model, or your own callable.")


# ---------------------------------------------------------------- sklearn_victim


TREE_MODELS = ("decision_tree",)
#: The default thief of a scikit-learn victim (a scikit-learn model cannot be ART's thief): a torch MLP.
SKLEARN_THIEF = ("mlp", {"hidden": [64]})


class SklearnVictimParams(BaseModel):
    model_config = PARAMS_CONFIG
    model: Literal["logistic_regression", "logistic_regression_ovr", "mlp", "decision_tree", "random_forest",
                   "svc"] = Field("logistic_regression", description="model to train from data.victim_train (ignored "
                                  "with path); logistic_regression is multinomial (softmax) for more than two classes, "
                                  "logistic_regression_ovr one-vs-rest")
    model_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the estimator")
    path: str | None = Field(None, description="a pickle/joblib file of a fitted estimator (needs trust_pickle)")
    trust_pickle: bool = Field(False, description="allow loading 'path': unpickling runs code from the file, so "
                               "only set this for files you trust")
    input: InputSpec = Field(default_factory=lambda: InputSpec(shape=[4]), description="input shape (d,) and range")
    cache: bool = Field(True, description="cache the trained model")


def sklearn_supports_output(p: SklearnVictimParams, mode: str) -> bool:
    """Whether the API can serve ``mode``: the leaf mode needs a decision tree (a loaded file is checked
    when it is loaded)."""
    if mode == "leaf":
        return p.path is not None or p.model in TREE_MODELS
    return True


victims.declare(
    "sklearn", "stealcheck.adapters.sklearn_victim:SklearnVictim",
    params=SklearnVictimParams,
    needs_training_data=lambda p: p.path is None,
    thief_architecture=lambda p: SKLEARN_THIEF,
    supports_output=sklearn_supports_output,
    summary="A scikit-learn classifier with predict_proba: trained here, or loaded from a trusted pickle/joblib file.")
