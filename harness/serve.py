"""``stealcheck serve``: a scenario's victim behind one of its defences, on the Open Inference Protocol.

The victim is built exactly as ``stealcheck run`` builds it (trained, or loaded from the cache), and
the defence is the scenario's own: output perturbation, label-only, or an active defence (reject,
proof-of-work, misinformation) driven by its fitted detector; per-client detectors such as PRADA
keep one history per API key. The wire format is :mod:`.oip`.

What the server enforces before the model sees a request:

- API keys (``Authorization: Bearer <key>``) from a keys file, held as SHA-256 digests and compared
  in constant time; 401 without a key, 403 for an unknown one;
- per-key quotas counted in samples, exact under concurrency (reserved under a lock before the
  answer is computed, refunded when nothing is answered), and a whole batch is refused when it
  would cross the quota (429 with what remains); per-key rate limits in samples per second (token
  bucket, 429 with Retry-After);
- body size, batch size, datatype, shape, finite values inside the input range (or clipped);
- proof-of-work as a round trip: a batch the detector finds suspicious gets a 428 challenge (seed,
  bits); the client resends the same inputs with a nonce. Honest batches below the threshold pay
  nothing.

Every answered request is one line of an append-only JSONL audit log (client, samples charged,
answered share, detector scores, flags), flushed before the answer is sent: a restarted server sums
it and resets nobody's quota. ``/v2/stealcheck/stats`` (admin keys) reads the per-key records,
``/metrics`` serves Prometheus counters and latencies. SIGINT / SIGTERM let requests in flight
finish, then the log is flushed and closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request  # FastAPI reads the endpoints' annotations from this module's globals

from . import oip
from .errors import ScenarioError, did_you_mean
from .oip import ProtocolError

log = logging.getLogger("stealcheck.serve")

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # bytes: a batch of 256 MNIST images written as JSON text is ~2.6 MB
CHALLENGE_SECONDS = 300.0  # a proof-of-work challenge expires after this
MAX_OPEN_CHALLENGES = 64  # per client: older ones are dropped
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


# ---------------------------------------------------------------- keys


class KeyEntry(BaseModel):
    """One API key of the keys file."""

    model_config = ConfigDict(extra="forbid", strict=True)
    client: str = Field(description="the client's name (audit log, stats, per-client detectors)")
    key: str | None = Field(None, min_length=16, description="the key itself (hashed when read; never kept)")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="or its SHA-256, hex")
    quota: int | None = Field(None, ge=0, description="samples this key may have answered in all; null = no limit")
    rate_limit: float | None = Field(None, gt=0, allow_inf_nan=False, description="samples per second; null = none")
    burst: int | None = Field(None, ge=1, description="samples a key may send at once under its rate limit "
                              "(default: max(rate_limit, the server's --max-batch))")
    admin: bool = Field(False, description="may read /v2/stealcheck/stats and /metrics")
    undefended: bool = Field(False, description="answers bypass the defence (the owner's evaluation key)")

    @model_validator(mode="after")
    def _one_key(self) -> "KeyEntry":
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' and 'key_sha256'")
        if not _CLIENT_NAME.match(self.client):
            raise ValueError(f"client names are 1-64 letters, digits or _.@-; got {self.client!r}")
        return self


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    keys: list[KeyEntry] = Field(min_length=1)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass
class Client:
    """A key's settings and what it has done since the audit log began."""

    name: str
    digest: bytes | None  # SHA-256 of the key (None: the anonymous client of --no-auth)
    quota: int | None = None
    rate_limit: float | None = None
    burst: float = math.inf
    admin: bool = False
    undefended: bool = False
    used: int = 0  # samples charged (answered, or reserved for a request being answered)
    requests: int = 0
    answered: int = 0  # samples answered in full (not refused, not misinformed)
    refused_requests: int = 0  # 429 / 428 / 400 after authentication
    flagged: bool = False
    score_max: float = -math.inf
    tokens: float = math.inf
    refilled: float = field(default_factory=time.monotonic)

    def remaining(self) -> int | None:
        return None if self.quota is None else max(0, self.quota - self.used)

    def stats(self) -> dict[str, Any]:
        return {"queries": self.used, "requests": self.requests, "answered": self.answered,
                "answered_share": self.answered / self.used if self.used else None, "quota": self.quota,
                "quota_remaining": self.remaining(), "rate_limit": self.rate_limit, "refused_requests":
                self.refused_requests, "flagged": self.flagged,
                "score_max": self.score_max if math.isfinite(self.score_max) else None,
                "admin": self.admin, "undefended": self.undefended}


def load_keys(path: str | Path, max_batch: int) -> list[Client]:
    """The keys file (YAML: ``keys: [{client, key | key_sha256, quota, rate_limit, burst, admin, undefended}]``)."""
    from .yamlio import load_yaml

    data, lines = load_yaml(path)
    try:
        spec = KeysFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        line = next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), None)
        where = f"{path}:{line}" if line else str(path)
        allowed = ", ".join(KeyEntry.model_fields)
        raise ScenarioError(f"{err['msg']} (a key entry has: {allowed}).", where=where,
                            path=".".join(loc) or None) from None
    clients, seen = [], set()
    for i, k in enumerate(spec.keys):
        digest = hash_key(k.key) if k.key is not None else bytes.fromhex(k.key_sha256)
        if k.client in {c.name for c in clients}:
            raise ScenarioError(f"client {k.client!r} appears twice; give each client one key.",
                                where=str(path), path=f"keys.{i}.client")
        if digest in seen:
            raise ScenarioError("this key is already given to another client.", where=str(path), path=f"keys.{i}")
        seen.add(digest)
        burst = float(k.burst if k.burst is not None else max(k.rate_limit or 0, max_batch))
        clients.append(Client(k.client, digest, k.quota, k.rate_limit, burst if k.rate_limit else math.inf,
                              k.admin, k.undefended, tokens=burst if k.rate_limit else math.inf))
    return clients


class KeyRing:
    """API keys held as digests; a presented key is compared with every digest in constant time."""

    def __init__(self, clients: list[Client] | None):
        self.auth = clients is not None
        self.clients = {c.name: c for c in clients} if clients is not None else {
            "anonymous": Client("anonymous", None, admin=True)}

    def authenticate(self, header: str | None) -> Client:
        if not self.auth:
            return self.clients["anonymous"]
        if not header:
            raise ProtocolError(401, "missing API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProtocolError(401, "the Authorization header must be 'Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        digest = hash_key(token.strip())
        found = None
        for c in self.clients.values():  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(c.digest, digest):
                found = c
        if found is None:
            raise ProtocolError(403, "unknown API key")
        return found


# ---------------------------------------------------------------- the audit log


class AuditLog:
    """Append-only JSONL: one line per request after authentication; quotas are summed from it on start.

    A line is written and flushed to the operating system before the answer leaves, so a killed
    server (even kill -9) has recorded every answer it sent. A torn last line is ignored.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.charged: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.answered: dict[str, int] = {}
        self.flagged: set[str] = set()
        if self.path.exists():
            with self.path.open("rb") as f:
                for raw in f:
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        continue  # a line torn by a crash
                    c = rec.get("client")
                    if not isinstance(c, str):
                        continue
                    self.charged[c] = self.charged.get(c, 0) + int(rec.get("charged", 0))
                    self.requests[c] = self.requests.get(c, 0) + 1
                    self.answered[c] = self.answered.get(c, 0) + int(rec.get("answered", 0))
                    if rec.get("flagged"):
                        self.flagged.add(c)
            if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
                with self.path.open("ab") as f:
                    f.write(b"\n")  # the torn line stays alone on its line
        self._file = self.path.open("a", encoding="utf-8")

    def restore(self, clients: dict[str, Client]) -> None:
        for name, c in clients.items():
            c.used = self.charged.get(name, 0)
            c.requests = self.requests.get(name, 0)
            c.answered = self.answered.get(name, 0)
            c.flagged = name in self.flagged

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


# ---------------------------------------------------------------- the defended model


@dataclass
class Answer:
    probs: np.ndarray
    answered: np.ndarray
    leaf: np.ndarray | None = None
    scores: np.ndarray | None = None
    pow_bits: int = 0


class PowRequired(Exception):
    def __init__(self, challenge: str, bits: int, scores: np.ndarray | None):
        self.challenge, self.bits, self.scores = challenge, bits, scores


class DefendedModel:
    """The victim served through one defence: an Oracle without budget, plus proof-of-work as a round trip.

    Not thread-safe (detectors keep per-client state): the server calls it under one lock.
    """

    def __init__(self, oracle: Any, raw_predict: Callable[[np.ndarray], np.ndarray], defence: str,
                 leaf_predict: Callable[[np.ndarray], np.ndarray] | None = None):
        from .defences.active import ProofOfWork, _ScoredDefence

        self.oracle = oracle
        oracle.record_inputs = False  # a server keeps counts, not every input it was sent
        self.pow = next((p for p in oracle.postprocessors if isinstance(p, ProofOfWork)), None)
        if self.pow is not None:  # the client solves the puzzle; the server only issues and checks it
            oracle.postprocessors = [p for p in oracle.postprocessors if p is not self.pow]
        self.scored = [p for p in oracle.postprocessors if isinstance(p, _ScoredDefence)]
        self.raw_predict = raw_predict
        self.leaf_predict = leaf_predict
        self.defence = defence
        self.challenges: dict[str, dict[str, tuple[bytes, int, float]]] = {}  # client -> hex -> (digest, bits, expiry)

    @staticmethod
    def _digest(x: np.ndarray) -> bytes:
        return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).digest()

    def _check_solution(self, client: str, x: np.ndarray, params: dict[str, Any]) -> None:
        from .defences.active import verify

        challenge, nonce = params.get("pow_challenge"), params.get("pow_nonce")
        if not isinstance(challenge, str) or isinstance(nonce, bool) or not isinstance(nonce, int):
            raise ProtocolError(400, "a proof-of-work answer needs parameters pow_challenge (hex string) and "
                                     "pow_nonce (integer)")
        issued = self.challenges.get(client, {}).pop(challenge, None)
        if issued is None:
            raise ProtocolError(400, "unknown or already used proof-of-work challenge; send the query again "
                                     "without one to get a new challenge")
        digest, bits, expiry = issued
        if time.monotonic() > expiry:
            raise ProtocolError(400, "the proof-of-work challenge expired; send the query again for a new one")
        if digest != self._digest(x):
            raise ProtocolError(400, "the proof-of-work challenge was issued for other inputs; resend the same batch")
        if not verify(bytes.fromhex(challenge), nonce, bits):
            raise ProtocolError(400, f"wrong proof-of-work nonce: sha256(challenge || nonce as 8 big-endian "
                                     f"bytes) must start with {bits} zero bits")

    def _challenge(self, client: str, x: np.ndarray) -> tuple[int, np.ndarray]:
        """The batch's difficulty (0: no puzzle). A batch's work is the sum of its queries' (2**bits each)."""
        scores = self.pow.query_scores(x, client)
        bits = self.pow.difficulty(scores)
        hard = bits[bits > 0]
        return (int(math.ceil(math.log2(np.sum(np.exp2(hard.astype(np.float64)))))) if len(hard) else 0), scores

    def answer(self, client: Client, x: np.ndarray, params: dict[str, Any]) -> Answer:
        leaf = self.leaf_predict(x) if self.leaf_predict is not None else None
        if client.undefended:
            probs = np.asarray(self.raw_predict(x), dtype=np.float64)
            return Answer(probs, np.ones(len(x), dtype=bool), leaf)
        scores, bits = None, 0
        if self.pow is not None:
            if params.get("pow_challenge") is not None:
                self._check_solution(client.name, x, params)
            else:
                bits, scores = self._challenge(client.name, x)
                if bits > 0:
                    challenge = secrets.token_bytes(16).hex()
                    open_ = self.challenges.setdefault(client.name, {})
                    while len(open_) >= MAX_OPEN_CHALLENGES:
                        open_.pop(next(iter(open_)))
                    open_[challenge] = (self._digest(x), bits, time.monotonic() + CHALLENGE_SECONDS)
                    raise PowRequired(challenge, bits, scores)
        probs = self.oracle.predict(x, client_id=client.name)
        answered = self.oracle.last_answered
        if self.scored:
            scores = self.scored[0].last_scores
        return Answer(probs, answered, leaf, scores, bits)


# ---------------------------------------------------------------- the service


@dataclass(frozen=True)
class Limits:
    max_batch: int = DEFAULT_MAX_BATCH
    max_body: int = DEFAULT_MAX_BODY
    clip_inputs: bool = False


class Service:
    """Keys, quotas, rate limits, the audit log and the defended model: everything but HTTP."""

    def __init__(self, name: str, model: DefendedModel, input_shape: tuple[int, ...], nb_classes: int,
                 value_range: tuple[float, float], output_mode: str, top_k: int, keys: KeyRing, audit: AuditLog,
                 limits: Limits = Limits()):
        self.name, self.model = name, model
        self.input_shape, self.nb_classes = tuple(input_shape), int(nb_classes)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.output_mode, self.top_k = output_mode, top_k
        self.keys, self.audit, self.limits = keys, audit, limits
        audit.restore(keys.clients)
        self.state_lock = threading.Lock()  # quotas, rate buckets, the audit log
        self.model_lock = threading.Lock()  # the model and its detectors' per-client state
        self.outputs = (oip.OUTPUT_NAME, oip.LEAF_NAME) if output_mode == "leaf" else (oip.OUTPUT_NAME,)
        self.started = time.time()
        self.announce_stop = False  # the CLI prints a line when the server stops

    def metadata(self) -> dict[str, Any]:
        return oip.metadata(self.name, self.input_shape, self.nb_classes, output_mode=self.output_mode,
                            top_k=self.top_k, value_range=self.value_range, max_batch=self.limits.max_batch,
                            defence=self.model.defence)

    def check_model(self, name: str) -> None:
        if name != self.name:
            raise ProtocolError(404, f"unknown model {name!r}; this server serves {self.name!r}")

    def _reserve(self, client: Client, n: int) -> None:
        """Charge ``n`` samples to the client now (refunded if nothing is answered), or refuse the batch."""
        with self.state_lock:
            if client.quota is not None and client.used + n > client.quota:
                client.refused_requests += 1
                left = client.quota - client.used
                raise ProtocolError(429, f"quota exceeded: this batch of {n} samples would pass the key's quota of "
                                         f"{client.quota}; {left} remaining", extra={"quota_remaining": left})
            if client.rate_limit is not None:
                now = time.monotonic()
                client.tokens = min(client.burst, client.tokens + (now - client.refilled) * client.rate_limit)
                client.refilled = now
                if n > client.burst:
                    client.refused_requests += 1
                    raise ProtocolError(413, f"a batch of {n} samples is larger than this key's burst of "
                                             f"{int(client.burst)} samples; send smaller batches")
                if client.tokens < n:
                    client.refused_requests += 1
                    wait = (n - client.tokens) / client.rate_limit
                    raise ProtocolError(429, f"rate limit of {client.rate_limit:g} samples/s exceeded; retry in "
                                             f"{wait:.2f} s", headers={"Retry-After": str(max(1, math.ceil(wait)))})
                client.tokens -= n
            client.used += n

    def _refund(self, client: Client, n: int) -> None:
        with self.state_lock:
            client.used -= n
            client.refused_requests += 1

    def infer(self, client: Client, request: oip.InferenceRequest, binary: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """Validate, charge, answer and log one inference request (call it off the event loop).

        Returns the response's JSON and its binary part (outputs asked for as binary data, else empty).
        """
        x = oip.decode_input(request.inputs[0], self.input_shape, self.value_range,
                             max_batch=self.limits.max_batch, clip=self.limits.clip_inputs, binary=binary)
        outputs = oip.check_outputs(request, self.outputs)
        n = len(x)
        self._reserve(client, n)
        t0 = time.perf_counter()
        try:
            with self.model_lock:
                ans = self.model.answer(client, x, request.parameters or {})
        except PowRequired as pow_:
            self._refund(client, n)
            with self.state_lock:
                self._log(client, request, n, 0, 0, pow_.scores, pow_bits=pow_.bits, status=428,
                          seconds=time.perf_counter() - t0)
            raise ProtocolError(428, "proof of work required: resend the same inputs with parameters pow_challenge "
                                     "and pow_nonce", extra={"pow": {"challenge": pow_.challenge, "bits": pow_.bits,
                                                                     "algorithm": "sha256",
                                                                     "expires_in": CHALLENGE_SECONDS}}) from None
        except BaseException:
            self._refund(client, n)
            raise
        answered = int(ans.answered.sum())
        with self.state_lock:
            client.requests += 1
            client.answered += answered
            self._log(client, request, n, n, answered, ans.scores, pow_bits=ans.pow_bits, status=200,
                      seconds=time.perf_counter() - t0)
            used, left = client.used, client.remaining()
        values = {oip.OUTPUT_NAME: (ans.probs, oip.OUTPUT_DATATYPE)}
        if ans.leaf is not None:
            values[oip.LEAF_NAME] = (np.asarray(ans.leaf, dtype=np.int64), "INT64")
        tensors, raw = [], []
        for name in outputs:
            tensor, data = oip.output_tensor(name, *values[name], binary=oip.wants_binary(request, name))
            tensors.append(tensor)
            raw.append(data)
        return {"model_name": self.name, "model_version": "1", "id": request.id or str(uuid.uuid4()),
                "parameters": {"queries_used": used, "quota_remaining": left}, "outputs": tensors}, b"".join(raw)

    def _log(self, client: Client, request: oip.InferenceRequest, samples: int, charged: int, answered: int,
             scores: np.ndarray | None, *, pow_bits: int, status: int, seconds: float) -> None:
        """One audit-log line (the caller holds ``state_lock``)."""
        flagged = False
        summary: dict[str, Any] = {}
        if scores is not None and len(scores):
            s = np.asarray(scores, dtype=np.float64)
            flagged = bool(np.isposinf(s).any())  # per-client detectors (PRADA): +inf from the flagged query on
            finite = s[np.isfinite(s)]
            if len(finite):
                summary = {"score_mean": float(finite.mean()), "score_max": float(finite.max())}
                client.score_max = max(client.score_max, summary["score_max"])
        client.flagged = client.flagged or flagged
        record = {"t": round(time.time(), 3), "client": client.name, "id": request.id, "status": status,
                  "samples": samples, "charged": charged, "answered": answered, "flagged": flagged,
                  "pow_bits": pow_bits, "ms": round(seconds * 1e3, 3), **summary}
        self.audit.write(record)

    def stats(self) -> dict[str, Any]:
        with self.state_lock:
            return {"model": self.name, "defence": self.model.defence, "uptime_seconds": round(time.time() -
                                                                                              self.started, 1),
                    "audit_log": str(self.audit.path), "clients": {n: c.stats() for n, c in self.keys.clients.items()}}


# ---------------------------------------------------------------- HTTP


def create_app(service: Service):
    """The FastAPI application for ``service`` (its own Prometheus registry, so tests can make several)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    registry = CollectorRegistry()
    requests_total = Counter("stealcheck_requests", "HTTP requests by endpoint and status",
                             ["endpoint", "status"], registry=registry)
    latency = Histogram("stealcheck_request_seconds", "request latency by endpoint", ["endpoint"], registry=registry,
                        buckets=(.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10))
    samples_total = Counter("stealcheck_samples", "inference samples answered, by client", ["client"],
                            registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.audit.close()  # after the requests in flight have finished
        if service.announce_stop:
            print(f"stealcheck serve: stopped after the requests in flight; audit log closed: {service.audit.path}",
                  file=sys.stderr, flush=True)

    app = FastAPI(title=f"stealcheck serve: {service.name}", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.service = service

    def error(exc: ProtocolError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):  # unknown paths, wrong methods
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return JSONResponse({"error": f"invalid request: {str(exc)[:300]}"}, status_code=400)

    @app.exception_handler(Exception)
    async def _crash(request, exc):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": "internal server error (see the server's log)"}, status_code=500)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        route = request.url.path
        endpoint = ("infer" if route.endswith("/infer") else "metadata" if route.startswith("/v2/models")
                    else "health" if route.startswith("/v2/health") else "other")
        t0 = time.perf_counter()
        response = await call_next(request)
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        requests_total.labels(endpoint, str(response.status_code)).inc()
        return response

    def admin(request: Request) -> None:
        client = service.keys.authenticate(request.headers.get("authorization"))
        if not client.admin:
            raise ProtocolError(403, "this endpoint needs an admin key")

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata():
        return {"name": "stealcheck", "version": _version(), "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, request: Request, version: str = "1"):
        try:
            service.keys.authenticate(request.headers.get("authorization"))  # what is served is for key holders
            service.check_model(name)
            if version != "1":
                raise ProtocolError(404, f"unknown version {version!r} of {name!r}; it has version '1'")
        except ProtocolError as exc:
            return error(exc)
        return service.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, request: Request, version: str = "1"):
        try:
            service.keys.authenticate(request.headers.get("authorization"))
            service.check_model(name)
        except ProtocolError as exc:
            return error(exc)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = "1"):
        try:
            client = service.keys.authenticate(request.headers.get("authorization"))  # before anything else
            service.check_model(name)
            body = await _read_body(request, service.limits.max_body)
            text, binary = oip.split_binary(body, request.headers.get(oip.BINARY_HEADER))
            req = oip.parse_request(oip.parse_json(text))
            result, raw = await run_in_threadpool(service.infer, client, req, binary)
        except ProtocolError as exc:
            return error(exc)
        samples_total.labels(client.name).inc(result["outputs"][0]["shape"][0] if result["outputs"] else 0)
        head = json.dumps(result, separators=(",", ":")).encode()
        if raw:
            return Response(head + raw, media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(head))})
        return Response(head, media_type="application/json")

    @app.get("/v2/stealcheck/stats")
    async def stats(request: Request):
        try:
            admin(request)
        except ProtocolError as exc:
            return error(exc)
        return service.stats()

    @app.get("/metrics")
    async def metrics(request: Request):
        try:
            admin(request)
        except ProtocolError as exc:
            return error(exc)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _read_body(request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProtocolError(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise ProtocolError(413, f"the body of {int(declared)} bytes is larger than this server's limit of "
                                     f"{limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"the body is larger than this server's limit of {limit} bytes")
        chunks.append(chunk)
    if size == 0:
        raise ProtocolError(400, "empty body: send a JSON inference request")
    return b"".join(chunks)


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------- building it from a scenario


def resolve_defence(scenario: Any, given: str) -> str:
    """A defence id of the scenario: its full id, or its plugin's name when one defence uses that plugin."""
    ids = [d.id for d in scenario.defences]
    if given in ids:
        return given
    same_plugin = [d.id for d in scenario.defences if d.plugin == given]
    if len(same_plugin) == 1:
        return same_plugin[0]
    if same_plugin:
        raise ScenarioError(f"{len(same_plugin)} defences of this scenario use '{given}': {', '.join(same_plugin)}; "
                            "give the full id of one.")
    names = ids + sorted({d.plugin for d in scenario.defences})
    raise ScenarioError(f"no defence {given!r} in this scenario.{did_you_mean(given, names)} Its defences: "
                        f"{', '.join(ids)}.")


def build_service(scenario: Any, defence_id: str, *, keys: list[Client] | None, audit_log: str | Path | None,
                  name: str | None = None, limits: Limits = Limits(), progress: bool = False) -> Service:
    """The scenario's victim (trained or cached as ``stealcheck run`` does) behind defence ``defence_id``."""
    from .cache import default_cache_dir
    from .cells import RunContext, World
    from .rundir import package_versions

    defence_id = resolve_defence(scenario, defence_id)
    ctx = RunContext(scenario.as_written, scenario.source_path,
                     str(scenario.model.output.cache_dir or default_cache_dir()),
                     package_versions()["stealcheck"], progress=progress)
    w = World(ctx, scenario)
    oracle = w.oracle(defence_id, None)
    v = w.victim
    model = DefendedModel(oracle, v.predict_proba, defence_id, leaf_predict=v.leaf_ids)
    name = name or scenario.name
    if audit_log is None:
        audit_log = default_audit_log(scenario, name, defence_id)
    return Service(name, model, v.input_shape, v.nb_classes, v.clip_values, scenario.victim.output,
                   scenario.victim.top_k, KeyRing(keys), AuditLog(audit_log), limits)


def default_audit_log(scenario: Any, name: str, defence_id: str) -> Path:
    """``<output.dir>/serve/<model>-<defence>.audit.jsonl`` (output.dir as run folders use it: from the current
    folder), with characters other than letters, digits, ``_.-`` replaced (a defence id holds ``:`` and ``,``)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{defence_id}")
    return Path(scenario.model.output.dir).expanduser() / "serve" / f"{stem}.audit.jsonl"


def serve(service: Service, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until SIGINT / SIGTERM; requests in flight finish, then the audit log is flushed and closed
    (uvicorn then re-raises the signal: the process ends as interrupted, 130, or terminated, 143)."""
    import uvicorn

    service.announce_stop = True
    config = uvicorn.Config(create_app(service), host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=30, lifespan="on")
    uvicorn.Server(config).run()


@contextlib.contextmanager
def background(service: Service, host: str = "127.0.0.1", port: int = 0):
    """Serve in a background thread (tests, benchmarks); yields the base URL. ``port=0`` picks a free port."""
    import uvicorn

    config = uvicorn.Config(create_app(service), host=host, port=port, log_level="warning", access_log=False,
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="stealcheck-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


__all__ = ["background", "AuditLog", "Client", "DefendedModel", "KeyRing", "Limits", "Service", "build_service", "create_app",
           "hash_key", "load_keys", "serve"]
