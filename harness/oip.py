"""The Open Inference Protocol (KServe V2 REST API) as stealcheck speaks it: the request and response
bodies, and the checks an input passes before a model sees it.

Both sides use this module: ``stealcheck serve`` (:mod:`.serve`) and the ``remote`` victim adapter.
Only JSON crosses the wire; nothing is ever deserialised into objects. The shapes follow the
protocol (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol):

- metadata: ``{"name", "versions", "platform", "inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``,
  plus ``parameters`` with what a stealcheck client needs (output mode, classes, input range, batch limit);
- inference request: ``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "data"}], "outputs"?}``,
  where ``data`` is flat in row-major order or nested, and ``shape`` must match it;
- inference response: ``{"model_name", "model_version", "id", "parameters", "outputs": [{"name", "shape", "datatype", "data"}]}``;
- an error: ``{"error": "..."}`` with a 4xx status.

The model's one input is ``input`` (FP32, ``[-1, *input_shape]``). Its output ``probabilities`` is FP64
``[-1, nb_classes]``: exactly what stealcheck's in-process oracle answers in the API's output mode
(one-hot rows in the label mode, the k largest probabilities in top_k), written with full float64
precision so that equation-solving attacks lose nothing on the wire. The leaf mode adds ``leaf``
(INT64 ``[-1]``, the decision tree's node id).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
LEAF_NAME = "leaf"
INPUT_DATATYPE = "FP32"
OUTPUT_DATATYPE = "FP64"
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES")  # the protocol's tensor data types (only FP32 inputs are accepted)


class ProtocolError(Exception):
    """A request the server refuses: its HTTP status, a message, optional headers and extra body fields."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


_STRICT = ConfigDict(extra="forbid", strict=True)


class RequestInput(BaseModel):
    model_config = _STRICT
    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    model_config = _STRICT
    name: StrictStr
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = _STRICT
    id: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = None


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN / Infinity constants; anything else is a 400."""
    try:
        return json.loads(body, parse_constant=_no_constants)
    except RecursionError:
        raise ProtocolError(400, "the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_request(obj: Any) -> InferenceRequest:
    if not isinstance(obj, dict):
        raise ProtocolError(400, "the body must be a JSON object with 'inputs'")
    try:
        return InferenceRequest.model_validate(obj)
    except ValidationError as exc:
        raise ProtocolError(400, f"invalid inference request: {_validation_message(exc)}") from None


def decode_input(tensor: RequestInput, input_shape: tuple[int, ...], value_range: tuple[float, float], *,
                 max_batch: int, clip: bool = False) -> np.ndarray:
    """The request's input as a float32 array ``(n, *input_shape)``, or a ProtocolError saying what is wrong.

    ``data`` may be flat (row-major) or nested as ``shape``; values must be finite numbers inside
    ``value_range`` (``clip``: values outside are clipped instead of refused).
    """
    if tensor.name != INPUT_NAME:
        raise ProtocolError(400, f"unknown input {tensor.name!r}; this model has one input, {INPUT_NAME!r}")
    if tensor.datatype != INPUT_DATATYPE:
        known = "" if tensor.datatype in DATATYPES else " (not a protocol datatype)"
        raise ProtocolError(400, f"input datatype must be {INPUT_DATATYPE}; got {tensor.datatype!r}{known}")
    shape = list(tensor.shape)
    want = [-1, *input_shape]
    if len(shape) != len(want) or tuple(shape[1:]) != tuple(input_shape):
        raise ProtocolError(400, f"input shape must be {want}; got {shape}")
    n = shape[0]
    if n < 1:
        raise ProtocolError(400, f"the batch must hold at least one sample; shape {shape}")
    if n > max_batch:
        raise ProtocolError(413, f"batch of {n} samples is larger than this server's limit of {max_batch}")
    size = math.prod(shape)
    try:
        arr = np.asarray(tensor.data)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(400, "input data must be an array of numbers, flat or nested as the shape") from None
    if arr.dtype.kind not in "iuf":
        what = {"b": "booleans", "U": "strings", "O": "mixed or nested values"}.get(arr.dtype.kind, str(arr.dtype))
        raise ProtocolError(400, f"input data must be numbers; got {what}")
    if arr.ndim != 1 and list(arr.shape) != shape:
        raise ProtocolError(400, f"nested input data has shape {list(arr.shape)}, not the declared {shape}")
    if arr.size != size:
        raise ProtocolError(400, f"shape {shape} needs {size} values; data holds {arr.size}")
    with np.errstate(over="ignore", invalid="ignore"):
        x = arr.astype(np.float32).reshape(shape)
    if not np.isfinite(x).all():
        raise ProtocolError(400, "input data must be finite numbers (within float32's range)")
    lo, hi = value_range
    if clip:
        return np.clip(x, lo, hi)
    if x.min() < lo or x.max() > hi:
        raise ProtocolError(400, f"input values must lie in [{lo}, {hi}]; got values in [{float(x.min())}, "
                                 f"{float(x.max())}]")
    return x


def check_outputs(request: InferenceRequest, available: tuple[str, ...]) -> list[str]:
    """The outputs to return: the requested ones (all must exist), else all."""
    if not request.outputs:
        return list(available)
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ProtocolError(400, f"unknown output(s) {unknown}; this model has {list(available)}")
    return names


def output_tensor(name: str, values: np.ndarray, datatype: str) -> dict[str, Any]:
    values = np.asarray(values)
    return {"name": name, "shape": list(values.shape), "datatype": datatype, "data": values.ravel().tolist()}


def metadata(name: str, input_shape: tuple[int, ...], nb_classes: int, *, output_mode: str, top_k: int,
             value_range: tuple[float, float], max_batch: int, defence: str) -> dict[str, Any]:
    outputs = [{"name": OUTPUT_NAME, "datatype": OUTPUT_DATATYPE, "shape": [-1, int(nb_classes)]}]
    if output_mode == "leaf":
        outputs.append({"name": LEAF_NAME, "datatype": "INT64", "shape": [-1]})
    return {"name": name, "versions": ["1"], "platform": "stealcheck",
            "inputs": [{"name": INPUT_NAME, "datatype": INPUT_DATATYPE, "shape": [-1, *map(int, input_shape)]}],
            "outputs": outputs,
            "parameters": {"output_mode": output_mode, "top_k": int(top_k), "nb_classes": int(nb_classes),
                           "input_range": [float(value_range[0]), float(value_range[1])],
                           "max_batch": int(max_batch), "defence": defence}}


def decode_output(body: dict[str, Any], name: str = OUTPUT_NAME) -> np.ndarray:
    """A response's output tensor as a numpy array of its declared shape (the client side)."""
    for out in body.get("outputs") or []:
        if isinstance(out, dict) and out.get("name") == name:
            dtype = np.float64 if out.get("datatype", OUTPUT_DATATYPE).startswith("FP") else np.int64
            return np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
    raise ValueError(f"the response has no output {name!r}")


__all__ = ["InferenceRequest", "ProtocolError", "check_outputs", "decode_input", "decode_output", "metadata",
           "output_tensor", "parse_json", "parse_request", "INPUT_NAME", "OUTPUT_NAME", "LEAF_NAME"]
