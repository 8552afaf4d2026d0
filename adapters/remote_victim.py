"""``kind: remote``: a victim behind an Open Inference Protocol endpoint (KServe V2 REST), queried with httpx.

The victim is a real prediction API: ``stealcheck serve``, or any OIP server (KServe, MLServer,
Triton). Two client identities talk to it, each with its own API key and its own counts:

- the **attacker** (key in ``$api_key_env``) answers the attacks' queries, through the oracle
  (:attr:`stealcheck.victim.Victim.query`, the attacker's door);
- the **evaluation** (key in ``$evaluation_api_key_env``) answers stealcheck's own queries: the test
  set, the uniform inputs, the honest users of the utility cells and the detectors' fitting
  (:meth:`stealcheck.victim.Victim.predict_proba`).

Requests carry at most ``max_batch`` samples. A 429 with Retry-After (rate limited), a 5xx or a
failed connection is retried up to ``retries`` times, waiting as the server says or backing off
exponentially; a 429 without Retry-After is an exhausted quota and fails at once; a 428 is a
proof-of-work challenge, solved (:func:`stealcheck.defences.active.solve`) and answered with the same
inputs. Answers are the "probabilities" output, float64 as the server wrote it.

This module imports neither torch nor ART at import time: ``stealcheck validate`` uses
:func:`complete_section` (the endpoint's metadata, the keys) and stays light.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from stealcheck.errors import BudgetExceededError, ScenarioError, StealcheckError

#: validate and scenario loading contact the endpoint with at most this timeout (seconds)
PROBE_TIMEOUT = 5.0
#: requests sent when the server declares no max_batch and the scenario sets none
DEFAULT_MAX_BATCH = 256
#: how an output mode coarsens: a scenario may ask for a mode at or after the server's one
MODE_ORDER = ("probabilities", "top_k", "label")
#: the binary tensor data extension (Triton's; stealcheck serve's): the JSON header's length, and the datatypes
BINARY_HEADER = "Inference-Header-Content-Length"
BINARY_DTYPES = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "UINT8": "u1", "BOOL": "?"}


class RemoteVictimError(StealcheckError):
    """The endpoint could not answer (unreachable after the retries, quota exhausted, refused input)."""


class QuotaExhaustedError(RemoteVictimError):
    """The server's quota for this key is spent (429 without Retry-After): not retried."""


class _Smaller(Exception):
    """A request was too large (413): max_batch was halved, send it again."""


@dataclass
class Usage:
    """What one client identity sent and what the server says about it."""

    identity: str
    key_env: str | None
    queries: int = 0  # samples answered (counted here)
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests repeated after a 429 with Retry-After, a 5xx or a connection error
    pow_solved: int = 0  # proof-of-work challenges solved
    pow_seconds: float = 0.0
    server_queries_used: int | None = None  # the server's count for this key, as last reported
    server_queries_before: int | None = None  # the server's count before this process's first answered query
    quota_remaining: int | None = None


class OIPClient:
    """One client identity of one model at an OIP endpoint (a key, its counters, batching and retries)."""

    def __init__(self, url: str, model: str, key: str | None, *, identity: str = "attacker",
                 key_env: str | None = None, timeout: float = 30.0, max_batch: int = DEFAULT_MAX_BATCH,
                 retries: int = 5, backoff: float = 0.5, max_wait: float = 60.0, max_queries: int | None = None,
                 nb_classes: int | None = None, input_name: str = "input", input_datatype: str = "FP32",
                 output_name: str | None = None, binary: bool = False,
                 sleep: Callable[[float], None] = time.sleep):
        import httpx

        self.url, self.model, self.identity = url.rstrip("/"), model, identity
        self.max_batch, self.retries, self.backoff, self.max_wait = max_batch, retries, backoff, max_wait
        self.max_queries, self.nb_classes = max_queries, nb_classes
        self.input_name, self.input_datatype, self.output_name = input_name, input_datatype, output_name
        self.binary = binary
        self.sleep = sleep
        self.usage = Usage(identity, key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._httpx = httpx

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ metadata
    def metadata(self) -> dict:
        """``GET /v2/models/{model}``."""
        r = self._http.get(f"/v2/models/{self.model}")
        if r.status_code != 200:
            raise RemoteVictimError(f"GET {self.url}/v2/models/{self.model}: {r.status_code} {_error_text(r)}")
        return r.json()

    # ------------------------------------------------------------------ inference
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (n, nb_classes), float64, for ``x``, in requests of at most ``max_batch`` samples."""
        x = np.asarray(x)
        if len(x) == 0:
            return np.empty((0, self.nb_classes or 0))
        if self.max_queries is not None and self.usage.queries + len(x) > self.max_queries:
            raise BudgetExceededError(
                f"the {self.identity} client of {self.url} would send {len(x)} more samples with "
                f"{self.usage.queries} of its max_queries {self.max_queries} sent; nothing was sent")
        out, start = [], 0
        while start < len(x):
            stop = start + self.max_batch
            try:
                out.append(self._infer(x[start:stop]))
            except _Smaller:  # a 413 halved max_batch: the same samples again, in smaller requests
                continue
            start = stop
        return np.concatenate(out)

    def _request(self, x: np.ndarray, parameters: dict | None = None) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of an inference request: JSON, or with ``binary`` the binary tensor data extension
        (a JSON header, then the input's little-endian bytes; the output asked for as bytes)."""
        flat = np.ascontiguousarray(x, dtype="<f8" if self.input_datatype == "FP64" else "<f4").reshape(-1)
        tensor: dict[str, Any] = {"name": self.input_name, "shape": list(x.shape), "datatype": self.input_datatype}
        body: dict[str, Any] = {"id": uuid.uuid4().hex, "inputs": [tensor]}
        output: dict[str, Any] = {"name": self.output_name or "probabilities"}
        if parameters:
            body["parameters"] = dict(parameters)
        if not self.binary:
            tensor["data"] = flat.tolist()
            if self.output_name:
                body["outputs"] = [output]
            return json.dumps(body, separators=(",", ":")).encode(), {"Content-Type": "application/json"}
        raw = flat.tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        body["outputs"] = [{**output, "parameters": {"binary_data": True}}]
        head = json.dumps(body, separators=(",", ":")).encode()
        return head + raw, {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(head))}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        from stealcheck.defences.active import solve

        path = f"/v2/models/{self.model}/infer"
        params: dict | None = None
        failures = challenges = 0
        while True:
            self.usage.requests += 1
            wait = None
            try:
                content, headers = self._request(x, params)
                r = self._http.post(path, content=content, headers=headers)
            except self._httpx.TransportError as exc:  # connection refused or reset, timeout
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if r.status_code == 200:
                    return self._answer(r, len(x))
                if r.status_code == 428:  # proof of work: solve the challenge and send the same inputs again
                    pow_ = _json(r).get("pow") or {}
                    challenge, bits = pow_.get("challenge"), pow_.get("bits")
                    challenges += 1
                    if not isinstance(challenge, str) or not isinstance(bits, int) or challenges > self.retries + 1:
                        raise RemoteVictimError(f"{self._where()}: 428 (proof of work) without a usable challenge, or "
                                                f"again after {challenges - 1} solved: {_error_text(r)}")
                    start = time.perf_counter()
                    nonce = solve(bytes.fromhex(challenge), bits)
                    self.usage.pow_seconds += time.perf_counter() - start
                    self.usage.pow_solved += 1
                    params = {"pow_challenge": challenge, "pow_nonce": nonce}
                    continue
                problem = f"{r.status_code} {_error_text(r)}"
                if r.status_code == 400 and params is not None and challenges <= self.retries:
                    # the solved challenge was refused (expired while solving, or the server restarted): a new one
                    self.usage.retries += 1
                    params = None
                    continue
                if r.status_code == 429:
                    wait = _retry_after(r)
                    if wait is None:
                        remaining = _json(r).get("quota_remaining")
                        if isinstance(remaining, int):
                            self.usage.quota_remaining = remaining
                        raise QuotaExhaustedError(
                            f"{self._where()}: the server's quota for this key is exhausted (429 without Retry-After: "
                            f"{_error_text(r)}); {self.usage.queries} samples were answered to this client. Ask the "
                            f"endpoint's owner for more quota, or lower the budgets.")
                elif r.status_code == 413 and len(x) > 1:  # too large for this server or key: halve, and keep it so
                    self.max_batch = min(self.max_batch, len(x) // 2)
                    raise _Smaller
                elif r.status_code < 500:
                    raise RemoteVictimError(f"{self._where()}: {problem}" + _hint(r.status_code, self.usage.key_env))
            if failures >= self.retries:
                raise RemoteVictimError(f"{self._where()}: {problem} (gave up after {self.retries} retr"
                                        f"{'y' if self.retries == 1 else 'ies'})")
            failures += 1
            self.usage.retries += 1
            self.sleep(min(self.max_wait, wait if wait is not None else self.backoff * 2 ** (failures - 1)))
            params = None  # a retried request gets its own challenge if it needs one

    def _answer(self, r, n: int) -> np.ndarray:
        content, raw = r.content, b""
        head = r.headers.get(BINARY_HEADER)
        if head is not None:  # the binary tensor data extension: a JSON header, then the tensors' bytes
            if not head.isdigit() or int(head) > len(content):
                raise RemoteVictimError(f"{self._where()}: invalid {BINARY_HEADER} {head!r}")
            content, raw = content[:int(head)], content[int(head):]
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        outputs = body.get("outputs") if isinstance(body, dict) else None
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise RemoteVictimError(f"{self._where()}: an answer without outputs")
        arrays, offset = [], 0
        try:
            for out in outputs:
                size = (out.get("parameters") or {}).get("binary_data_size")
                if size is not None:
                    dtype = BINARY_DTYPES.get(out.get("datatype"))
                    if dtype is None or not isinstance(size, int) or offset + size > len(raw):
                        raise ValueError(f"binary output of datatype {out.get('datatype')} and {size} bytes")
                    values = np.frombuffer(raw[offset:offset + size], dtype=dtype)
                    offset += size
                else:
                    values = np.asarray(out["data"], dtype=np.float64)
                arrays.append(values.astype(np.float64).reshape([int(d) for d in out["shape"]]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteVictimError(f"{self._where()}: output '{out.get('name')}' does not match its shape ({exc})") \
                from None
        wanted = [i for i, o in enumerate(outputs) if o.get("name") == (self.output_name or "probabilities")]
        data = arrays[wanted[0] if wanted else 0]
        if data.ndim == 1 or (data.ndim == 2 and data.shape[1] == 1 and self.nb_classes not in (None, 1)):
            labels = data.reshape(-1).astype(np.int64)  # a server answering class labels: one-hot, the label mode
            if len(labels) and (labels.min() < 0 or (self.nb_classes is not None and labels.max() >= self.nb_classes)):
                raise RemoteVictimError(f"{self._where()}: label answers outside 0..{(self.nb_classes or 0) - 1}")
            data = np.zeros((len(labels), self.nb_classes or int(labels.max()) + 1))
            data[np.arange(len(labels)), labels] = 1.0
        if data.shape[0] != n or (self.nb_classes is not None and data.shape[1] != self.nb_classes):
            raise RemoteVictimError(f"{self._where()}: answer of shape {list(data.shape)} for {n} samples of "
                                    f"{self.nb_classes} classes")
        if not np.all(np.isfinite(data)):
            raise RemoteVictimError(f"{self._where()}: the answer holds NaN or infinite values")
        self.usage.queries += n
        params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        used = params.get("queries_used")
        if isinstance(used, int) and not isinstance(used, bool):
            if self.usage.server_queries_before is None:
                self.usage.server_queries_before = used - n
            self.usage.server_queries_used = used
        remaining = params.get("quota_remaining")
        if isinstance(remaining, int) and not isinstance(remaining, bool):
            self.usage.quota_remaining = remaining
        return data

    def _where(self) -> str:
        return f"{self.url}/v2/models/{self.model}/infer ({self.identity} key)"


def _json(r) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_text(r) -> str:
    error = _json(r).get("error")
    text = error if isinstance(error, str) else r.text
    return text[:300] if text else r.reason_phrase


def _retry_after(r) -> float | None:
    """Retry-After in seconds (a number, or an HTTP date), else None."""
    value = r.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 1.0  # present but unreadable: a rate limit all the same
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else 1.0


def _hint(status: int, key_env: str | None) -> str:
    if status == 401:
        return (f" (no key was sent: set {key_env})" if key_env else
                " (the server wants an API key: set api_key_env / evaluation_api_key_env)")
    if status == 403:
        return f" (the server refused the key in ${key_env})" if key_env else ""
    if status == 404:
        return " (no such model at this endpoint)"
    if status == 413:
        return " (batch or body too large: lower victim.max_batch)"
    return ""


# ---------------------------------------------------------------------- load time: metadata and keys


def endpoint_url(p: Any, path: str) -> str:
    """``url``, else the environment variable ``url_env``; a ScenarioError when neither gives one."""
    url = p.url or (os.environ.get(p.url_env) if p.url_env else None)
    if not url:
        raise ScenarioError(f"no endpoint: victim.url is not set and the environment variable {p.url_env} is "
                            "empty (e.g. export STEALCHECK_URL=http://127.0.0.1:8080).", path=f"{path}.url")
    if not url.startswith(("http://", "https://")):
        raise ScenarioError(f"victim url must start with http:// or https://; got {url!r}.", path=f"{path}.url")
    return url.rstrip("/")


def api_key(env: str | None, path: str, what: str) -> str | None:
    """The key in the environment variable ``env`` (None when ``env`` is null: a server without auth)."""
    if env is None:
        return None
    key = os.environ.get(env)
    if not key:
        raise ScenarioError(f"the environment variable {env} (the {what} API key) is not set. Export the key there, "
                            f"or set {path.rsplit('.', 1)[-1]}: null for a server that runs --no-auth.", path=path)
    return key


@dataclass(frozen=True)
class Endpoint:
    """What the endpoint's metadata says of its model."""

    input_shape: list[int]
    input_name: str
    input_datatype: str
    nb_classes: int | None
    output_mode: str
    top_k: int
    input_range: list[float] | None
    max_batch: int | None
    output_name: str
    raw: dict


def read_metadata(meta: Any, where: str, path: str) -> Endpoint:
    """Parse an OIP model metadata answer: stealcheck's serve, or any OIP server.

    Other servers (MLServer, Triton, KServe) name their tensors as they like and may declare no
    ``parameters`` (then the scenario gives what they leave out: classes, input range) and even no
    outputs. An integer output of shape [-1] or [-1, 1] is a label server (output mode label).
    """
    def bad(why: str) -> ScenarioError:
        return ScenarioError(f"the model metadata at {where} is not usable: {why}.", path=path)

    if not isinstance(meta, dict):
        raise bad("not a JSON object")
    inputs, outputs = meta.get("inputs"), meta.get("outputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad("stealcheck queries models with exactly one input tensor")
    shape = inputs[0].get("shape")
    if not isinstance(shape, list) or len(shape) < 2 or not all(isinstance(d, int) for d in shape) or \
            any(d <= 0 for d in shape[1:]):
        raise bad(f"input shape {shape!r} is not [-1, d1, d2, ...] with positive dimensions")
    datatype = str(inputs[0].get("datatype", "FP32")).upper()
    if datatype not in ("FP32", "FP64"):
        raise bad(f"input datatype {datatype} (stealcheck sends FP32 or FP64)")
    if outputs is None:
        outputs = []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise bad("outputs is not a list of tensors")
    chosen = next((o for o in outputs if o.get("name") == "probabilities"), outputs[0] if outputs else {})
    params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    out_shape = chosen.get("shape")
    labels = str(chosen.get("datatype", "")).upper().startswith(("INT", "UINT")) and \
        isinstance(out_shape, list) and (len(out_shape) == 1 or out_shape[1:] == [1])
    nb = params.get("nb_classes")
    if not isinstance(nb, int) and not labels and isinstance(out_shape, list) and len(out_shape) == 2 and \
            isinstance(out_shape[1], int) and out_shape[1] >= 2:
        nb = out_shape[1]
    if not isinstance(nb, int) or isinstance(nb, bool) or nb < 2:
        nb = None  # the scenario must give nb_classes
    mode = params.get("output_mode", "label" if labels else "probabilities")
    if mode not in (*MODE_ORDER, "leaf"):
        raise bad(f"unknown output_mode {mode!r}")
    top_k = params.get("top_k", 1)
    rng = params.get("input_range")
    if rng is not None:
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)
                and rng[0] < rng[1]):
            raise bad(f"input_range {rng!r} is not [low, high]")
        rng = [float(rng[0]), float(rng[1])]
    max_batch = params.get("max_batch")
    return Endpoint(list(shape[1:]), str(inputs[0].get("name") or "input"), datatype, nb,
                    "probabilities" if mode == "leaf" else mode, top_k if isinstance(top_k, int) and top_k >= 1 else 1,
                    rng, max_batch if isinstance(max_batch, int) and max_batch > 0 else None,
                    str(chosen.get("name") or "probabilities"), meta)


def probe_key(http, url: str, model: str, key: str | None, env: str | None, path: str, what: str) -> None:
    """Show the endpoint a key without spending any quota: an inference request with no inputs.

    Servers check the key before the body, so 401/403 means the key, and any other answer (400:
    the empty request itself) means the key was accepted; 429 without Retry-After: a spent quota.
    """
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = http.post(f"{url}/v2/models/{model}/infer", json={"inputs": []}, headers=headers)
    except Exception as exc:
        raise ScenarioError(f"cannot reach {url} to check the {what} key ({type(exc).__name__}: {exc}).", path=path)
    if r.status_code == 401:
        raise ScenarioError(f"the endpoint {url} wants an API key for the {what} identity, and none was sent "
                            f"({_error_text(r)}): set {path.rsplit('.', 1)[-1]} to an environment variable holding "
                            "one.", path=path)
    if r.status_code == 403:
        raise ScenarioError(f"the endpoint {url} refused the {what} key in ${env} (403: {_error_text(r)}).", path=path)
    if r.status_code == 429 and _retry_after(r) is None:
        raise ScenarioError(f"the {what} key in ${env} has no quota left at {url} ({_error_text(r)}).", path=path)


def complete_section(section: dict, path: str = "victim") -> dict:
    """``complete`` capability of kind remote: the victim section with the endpoint's metadata filled in.

    Fills ``url`` (from ``url_env``), ``input`` (shape and range), ``nb_classes``, ``output`` /
    ``top_k`` and ``max_batch`` wherever the section leaves them out, and checks what it gives
    against the endpoint: same shape and classes, a range inside the server's, an output mode the
    server can give (the same or coarser: probabilities -> top_k -> label, applied on this side).
    Checks both keys (set, accepted). Every problem is a ScenarioError naming its key.
    """
    import httpx

    from .specs import RemoteVictimParams

    p = RemoteVictimParams.model_validate({k: v for k, v in section.items() if k not in ("kind", "output", "top_k")})
    url = endpoint_url(p, path)
    where = f"{url}/v2/models/{p.model}"
    keys = {"api_key_env": api_key(p.api_key_env, f"{path}.api_key_env", "attacker's"),
            "evaluation_api_key_env": api_key(p.evaluation_api_key_env, f"{path}.evaluation_api_key_env",
                                              "evaluation's")}
    shown_key = keys["evaluation_api_key_env"] or keys["api_key_env"]  # stealcheck serve shows its model to key holders
    with httpx.Client(timeout=min(p.timeout, PROBE_TIMEOUT),
                      headers={"Authorization": f"Bearer {shown_key}"} if shown_key else {}) as http:
        try:
            r = http.get(where)
        except httpx.TransportError as exc:
            raise ScenarioError(f"the endpoint {url} is unreachable ({type(exc).__name__}: {exc}). Is the server "
                                "running there (e.g. stealcheck serve)?", path=f"{path}.url") from None
        if r.status_code in (401, 403):  # the key shown with the metadata request: say which one, and why
            for name, key in keys.items():
                probe_key(http, url, p.model, key, getattr(p, name), f"{path}.{name}",
                          "attacker's" if name == "api_key_env" else "evaluation's")
        if r.status_code == 404:
            raise ScenarioError(f"the endpoint {url} has no model '{p.model}' ({_error_text(r)}).",
                                path=f"{path}.model")
        if r.status_code != 200:
            raise ScenarioError(f"GET {where} answered {r.status_code}: {_error_text(r)}.", path=f"{path}.url")
        try:
            meta = r.json()
        except ValueError:
            meta = None
        ep = read_metadata(meta, where, f"{path}.model")
        binary = p.binary
        if binary is None:  # the binary tensor data extension when the server lists it (GET /v2)
            try:
                server = http.get(f"{url}/v2")
                extensions = server.json().get("extensions") if server.status_code == 200 else None
            except (httpx.TransportError, ValueError, AttributeError):
                extensions = None
            binary = isinstance(extensions, list) and "binary_tensor_data" in extensions
        for name, key in keys.items():
            probe_key(http, url, p.model, key, getattr(p, name), f"{path}.{name}",
                      "attacker's" if name == "api_key_env" else "evaluation's")

    out = dict(section)
    out["url"] = url
    given_input = section.get("input") if isinstance(section.get("input"), dict) else {}
    if p.input is not None and "shape" in given_input and list(p.input.shape) != ep.input_shape:
        raise ScenarioError(f"victim.input.shape {list(p.input.shape)} disagrees with the endpoint's input shape "
                            f"{ep.input_shape} ({where}); remove it to take the endpoint's.",
                            path=f"{path}.input.shape")
    filled_input = dict(given_input)
    filled_input["shape"] = ep.input_shape
    if "range" in given_input:
        lo, hi = p.input.range
        if ep.input_range is not None and (lo < ep.input_range[0] or hi > ep.input_range[1]):
            raise ScenarioError(f"victim.input.range [{lo}, {hi}] is wider than the endpoint accepts "
                                f"{ep.input_range}.", path=f"{path}.input.range")
    elif ep.input_range is not None:
        filled_input["range"] = ep.input_range
    else:
        raise ScenarioError(f"the endpoint {where} declares no input range: give victim.input.range (the values "
                            "its model accepts).", path=f"{path}.input")
    out["input"] = filled_input
    if p.nb_classes is not None and ep.nb_classes is not None and p.nb_classes != ep.nb_classes:
        raise ScenarioError(f"victim.nb_classes {p.nb_classes} disagrees with the endpoint's {ep.nb_classes} classes.",
                            path=f"{path}.nb_classes")
    if p.nb_classes is None and ep.nb_classes is None:
        raise ScenarioError(f"the endpoint {where} declares no number of classes (parameters.nb_classes, or an output "
                            "of shape [-1, k]): give victim.nb_classes.", path=f"{path}.nb_classes")
    out["nb_classes"] = ep.nb_classes or p.nb_classes
    mode = section.get("output", ep.output_mode)
    top_k = section.get("top_k", ep.top_k if mode == "top_k" else 1)
    if mode == "leaf":
        raise ScenarioError("output: leaf cannot be used with a remote victim (stealcheck reads its probabilities "
                            "output only); leave output out to take the endpoint's mode.", path=f"{path}.output")
    coarser_ok = MODE_ORDER.index(mode) >= MODE_ORDER.index(ep.output_mode) if mode in MODE_ORDER else False
    if mode == "top_k" and ep.output_mode == "top_k" and isinstance(top_k, int) and top_k > ep.top_k:
        coarser_ok = False
    if not coarser_ok:
        served = ep.output_mode + (f" (k = {ep.top_k})" if ep.output_mode == "top_k" else "")
        raise ScenarioError(f"output: {mode}{f' (top_k {top_k})' if mode == 'top_k' else ''} asks for more than the "
                            f"endpoint gives: it serves {served}. A remote victim can only be given the endpoint's "
                            "mode or a coarser one (probabilities -> top_k -> label), applied on this side; leave "
                            "output out to take the endpoint's.", path=f"{path}.output")
    out["output"] = mode
    if mode == "top_k":
        out["top_k"] = top_k
    server_batch = ep.max_batch
    if p.max_batch is None:
        out["max_batch"] = server_batch or DEFAULT_MAX_BATCH
    elif server_batch is not None and p.max_batch > server_batch:
        out["max_batch"] = server_batch  # the server would refuse larger requests (413)
    out["binary"] = binary
    out["input_name"] = ep.input_name
    out["input_datatype"] = ep.input_datatype
    out["output_name"] = ep.output_name
    return out


# ---------------------------------------------------------------------- run time: the Victim


class RemoteVictim:
    """A model behind an OIP endpoint, as a stealcheck Victim (built once the section is complete)."""

    @staticmethod
    def build(p: Any, ctx: Any):
        from art.estimators.classification import BlackBoxClassifier

        from stealcheck.victim import Victim

        from .specs import remote_thief

        if p.input is None or p.nb_classes is None or p.max_batch is None:
            raise ScenarioError("the remote victim's section was not completed from its endpoint's metadata: load "
                                "the scenario with stealcheck.cli.load_and_check (or scenario.complete_scenario).",
                                path="victim")
        url = endpoint_url(p, "victim")
        common = dict(timeout=p.timeout, max_batch=p.max_batch, retries=p.retries, backoff=p.backoff,
                      max_wait=p.max_wait, nb_classes=p.nb_classes, input_name=p.input_name,
                      input_datatype=p.input_datatype,
                      output_name=p.output_name, binary=bool(p.binary))
        attacker = OIPClient(url, p.model, api_key(p.api_key_env, "victim.api_key_env", "attacker's"),
                             identity="attacker", key_env=p.api_key_env, max_queries=p.max_queries, **common)
        evaluation = OIPClient(url, p.model, api_key(p.evaluation_api_key_env, "victim.evaluation_api_key_env",
                                                     "evaluation's"),
                               identity="evaluation", key_env=p.evaluation_api_key_env, **common)

        class RemoteClassifier(BlackBoxClassifier):
            """ART's black box over the evaluation's identity; answers stay float64 (ART's own predict casts
            to float32) and the client batches by max_batch itself."""

            def predict(self, x: np.ndarray, batch_size: int = 128, **kwargs) -> np.ndarray:
                return self._predict_fn(x)

        meta = attacker.metadata()  # provenance: what the endpoint says it serves (its defence, its platform)
        shape, lo_hi = tuple(p.input.shape), tuple(p.input.range)
        classifier = RemoteClassifier(evaluation.predict, shape, p.nb_classes, clip_values=lo_hi)
        arch, arch_params = remote_thief(p)
        return Victim(classifier=classifier, nb_classes=p.nb_classes, input_shape=shape, clip_values=lo_hi,
                      description=f"remote {p.model} at {url}", thief_architecture=arch,
                      thief_arch_params=dict(arch_params),
                      info={"url": url, "model": p.model, "max_batch": p.max_batch,
                            "api_key_env": p.api_key_env, "evaluation_api_key_env": p.evaluation_api_key_env,
                            "endpoint": {k: meta.get(k) for k in ("platform", "versions", "parameters")}},
                      query=attacker.predict,
                      usage=lambda: {c.identity: asdict(c.usage) for c in (attacker, evaluation)})
