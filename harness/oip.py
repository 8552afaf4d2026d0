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
    data: list[Any] | None = None  # absent when the tensor travels as binary data (parameters.binary_data_size)
    parameters: dict[str, Any] | None = None

    def binary_size(self) -> int | None:
        size = (self.parameters or {}).get("binary_data_size")
        if size is None:
            return None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ProtocolError(400, f"binary_data_size must be a non-negative integer; got {size!r}")
        return size


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


BINARY_HEADER = "inference-header-content-length"  # the binary tensor data extension's header


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a body; with the binary tensor data extension (Triton's, used by its
    clients by default) the JSON header's length comes in the Inference-Header-Content-Length header."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ProtocolError(400, f"invalid {BINARY_HEADER} header {header_length!r} for a body of {len(body)} bytes")
    n = int(header_length)
    return body[:n], body[n:]


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
                 max_batch: int, clip: bool = False, binary: bytes = b"") -> np.ndarray:
    """The request's input as a float32 array ``(n, *input_shape)``, or a ProtocolError saying what is wrong.

    ``data`` may be flat (row-major) or nested as ``shape``; values must be finite numbers inside
    ``value_range`` (``clip``: values outside are clipped instead of refused). ``binary``: the body's
    binary part, for an input sent with the binary tensor data extension (FP32 little-endian).
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
    binary_size = tensor.binary_size()
    if binary_size is not None:
        if tensor.data is not None:
            raise ProtocolError(400, "an input has either data or parameters.binary_data_size, not both")
        if binary_size != size * 4 or len(binary) != binary_size:
            raise ProtocolError(400, f"binary input of shape {shape} needs {size * 4} bytes (FP32, little-endian); "
                                     f"binary_data_size says {binary_size} and the body holds {len(binary)}")
        x = np.frombuffer(binary, dtype="<f4").astype(np.float32).reshape(shape)
        return _check_values(x, value_range, clip)
    if binary:
        raise ProtocolError(400, "the body carries binary data but no input declares binary_data_size")
    if tensor.data is None:
        raise ProtocolError(400, "the input has no data (and no parameters.binary_data_size)")
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
    return _check_values(x, value_range, clip)


def _check_values(x: np.ndarray, value_range: tuple[float, float], clip: bool) -> np.ndarray:
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


def wants_binary(request: InferenceRequest, name: str) -> bool:
    """Whether the client asked for output ``name`` as binary data (the extension's two ways of asking)."""
    for out in request.outputs or []:
        if out.name == name and (out.parameters or {}).get("binary_data") is not None:
            return (out.parameters or {}).get("binary_data") is True
    return (request.parameters or {}).get("binary_data_output") is True


def output_tensor(name: str, values: np.ndarray, datatype: str, binary: bool = False) -> tuple[dict[str, Any], bytes]:
    """An output tensor as JSON (flat row-major data), or its JSON description and its little-endian bytes."""
    values = np.asarray(values)
    tensor = {"name": name, "shape": list(values.shape), "datatype": datatype}
    if binary:
        raw = np.ascontiguousarray(values, dtype="<f8" if datatype == "FP64" else "<i8").tobytes()
        return {**tensor, "parameters": {"binary_data_size": len(raw)}}, raw
    return {**tensor, "data": values.ravel().tolist()}, b""


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
    """A JSON response's output tensor as a numpy array of its declared shape (the client side)."""
    for out in body.get("outputs") or []:
        if isinstance(out, dict) and out.get("name") == name:
            dtype = np.float64 if out.get("datatype", OUTPUT_DATATYPE).startswith("FP") else np.int64
            return np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
    raise ValueError(f"the response has no output {name!r}")


def encode_request(x: np.ndarray, *, binary: bool = False, request_id: str | None = None,
                   parameters: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """The client side: an inference request for ``x`` (FP32), as (body, headers).

    ``binary``: the input and the output travel as raw little-endian bytes (the binary tensor data
    extension, for servers that list ``binary_tensor_data`` at ``GET /v2``), which spares both
    sides printing and parsing every number as text.
    """
    x = np.ascontiguousarray(x, dtype="<f4")
    tensor: dict[str, Any] = {"name": INPUT_NAME, "shape": list(x.shape), "datatype": INPUT_DATATYPE}
    body: dict[str, Any] = {"inputs": [tensor]}
    if request_id is not None:
        body["id"] = request_id
    if parameters:
        body["parameters"] = dict(parameters)
    if not binary:
        tensor["data"] = x.ravel().tolist()
        return json.dumps(body, separators=(",", ":")).encode(), {"Content-Type": "application/json"}
    raw = x.tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    body["outputs"] = [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}]
    head = json.dumps(body, separators=(",", ":")).encode()
    return head + raw, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}


def decode_response(content: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The client side: a response's JSON and its output tensors as numpy arrays of their declared shapes."""
    text, raw = split_binary(content, header_length)
    body = parse_json(text)
    if not isinstance(body, dict):
        raise ProtocolError(502, "the server's answer is not a JSON object")
    arrays, offset = {}, 0
    for out in body.get("outputs") or []:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise ProtocolError(502, "the server's answer has a malformed output tensor")
        dtype = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}.get(out.get("datatype"))
        if dtype is None:
            raise ProtocolError(502, f"the server answered datatype {out.get('datatype')!r}; expected FP64/FP32/INT64")
        size = (out.get("parameters") or {}).get("binary_data_size")
        try:
            if size is not None:
                values = np.frombuffer(raw[offset:offset + size], dtype=dtype)
                offset += size
            else:
                values = np.asarray(out["data"], dtype=dtype)
            arrays[out["name"]] = values.astype(np.float64 if dtype[1] == "f" else np.int64).reshape(out["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(502, f"the server's output {out['name']!r} does not match its shape: {exc}") from None
    return body, arrays


__all__ = ["InferenceRequest", "ProtocolError", "check_outputs", "decode_input", "decode_output", "decode_response", "encode_request",
           "metadata", "output_tensor", "parse_json", "parse_request", "split_binary", "wants_binary", "INPUT_NAME",
           "OUTPUT_NAME", "LEAF_NAME"]
