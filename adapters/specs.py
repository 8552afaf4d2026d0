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


# ---------------------------------------------------------------- remote_victim


class RemoteVictimParams(BaseModel):
    model_config = PARAMS_CONFIG
    url: str | None = Field(None, description="base URL of the Open Inference Protocol endpoint, e.g. "
                            "http://127.0.0.1:8080; null = the environment variable named by url_env")
    url_env: str = Field("STEALCHECK_URL", description="environment variable holding the URL when url is null")
    model: str = Field(description="the model's name at the endpoint (GET /v2/models/{model}); stealcheck serve "
                       "names it after its scenario")
    api_key_env: str | None = Field("STEALCHECK_API_KEY", description="environment variable holding the attacker's "
                                    "API key (Authorization: Bearer), which answers the attacks' queries; null = "
                                    "send no key (a server run with --no-auth)")
    evaluation_api_key_env: str | None = Field(
        "STEALCHECK_EVAL_KEY", description="environment variable holding the evaluation's own API key, which answers "
        "stealcheck's queries (test set, uniform inputs, honest users, detectors' fitting), counted apart from the "
        "attacker's; null = send no key")
    timeout: float = Field(30.0, gt=0, le=3600, description="seconds per request (loading and validate wait at most "
                           "5 s for the metadata)")
    max_batch: int | None = Field(None, gt=0, description="samples per request; null = the endpoint's declared "
                                  "max_batch (else 256); never more than the endpoint's")
    retries: int = Field(5, ge=0, le=100, description="retries of a request after a 429 with Retry-After (rate "
                         "limit), a 5xx or a connection error; a 429 without Retry-After (quota exhausted) is not "
                         "retried")
    backoff: float = Field(0.5, ge=0, le=600, description="seconds before the first retry after a 5xx or connection "
                           "error, doubled at each retry (a 429 waits its Retry-After)")
    max_wait: float = Field(60.0, ge=0, le=3600, description="the longest single wait between retries, in seconds")
    max_queries: int | None = Field(None, gt=0, description="client-side hard cap on the samples one process sends "
                                    "under the attacker's key (null = none: the oracle already refuses queries "
                                    "past each attack's budget)")
    nb_classes: int | None = Field(None, gt=1, description="number of classes; null = the endpoint's metadata")
    input: InputSpec | None = Field(None, description="input shape and range; null (or keys left out) = the "
                                    "endpoint's metadata (the server normalises: mean/std are not used)")
    thief_architecture: str | None = Field(None, description="default thief when thief.architecture is null: "
                                           "null = conv3 for image inputs (C, H, W), an MLP (hidden [64]) otherwise")
    binary: bool | None = Field(None, description="send inputs and read answers as raw little-endian bytes (the "
                                "binary tensor data extension: no numbers printed and parsed as text); null = when "
                                "the endpoint lists binary_tensor_data at GET /v2 (filled in at load)")
    input_name: str = Field("input", description="name of the input tensor sent (filled in from the endpoint's "
                            "metadata)")
    input_datatype: Literal["FP32", "FP64"] = Field("FP32", description="datatype of the input tensor sent "
                                                    "(filled in from the endpoint's metadata)")
    output_name: str | None = Field(None, description="the output read from answers; null = 'probabilities' "
                                    "(filled in from the endpoint's metadata)")


def remote_thief(p: RemoteVictimParams) -> tuple[str, dict]:
    """The default thief of a remote victim: its architecture is unknown, so conv3 for images, else an MLP."""
    if p.thief_architecture is not None:
        return p.thief_architecture, {}
    shape = p.input.shape if p.input is not None else []
    return ("conv3", {}) if len(shape) == 3 else SKLEARN_THIEF


def _complete_remote(section: dict, path: str) -> dict:
    from stealcheck.adapters.remote_victim import complete_section

    return complete_section(section, path)


victims.declare(
    "remote", "stealcheck.adapters.remote_victim:RemoteVictim",
    params=RemoteVictimParams,
    needs_training_data=False,
    thief_architecture=remote_thief,
    supports_output=lambda p, mode: mode != "leaf",
    remote=True,
    complete=_complete_remote,
    summary="A model behind an Open Inference Protocol endpoint (stealcheck serve, KServe, MLServer, Triton), "
            "queried over HTTP with separate attacker and evaluation API keys; shapes, classes and output mode come "
            "from its metadata.")
