"""kind: remote — a victim behind an Open Inference Protocol endpoint.

Loopback only: every server here is started by the test on a free port of 127.0.0.1 and stopped
by it. The retry, quota and proof-of-work paths run against a small FastAPI double of an OIP
server whose answers can be scripted; the end-to-end comparison runs against `stealcheck serve`
itself (tests/test_remote_serve.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from conftest import tiny_scenario
from stealcheck.adapters.remote_victim import (OIPClient, QuotaExhaustedError, RemoteVictimError, complete_section)
from stealcheck.cli import main
from stealcheck.errors import BudgetExceededError, ScenarioError

NB_FEATURES, NB_CLASSES = 64, 10  # digits, 8x8
ATTACK_KEY, EVAL_KEY = "attack-key-123", "eval-key-456"


# ---------------------------------------------------------------- a loopback server


@contextmanager
def loopback(app):
    """Serve the ASGI ``app`` with uvicorn on a free port of 127.0.0.1; yield its URL; stop it after."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the loopback server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Double:
    """A small OIP server: a fixed linear-softmax model over 8x8 inputs, per-key counts, scripted failures.

    ``script`` holds (status, headers, body) answers given to the next inference requests, before
    the model answers normally; ``pow_bits`` > 0 asks every request for a proof of work first.
    """

    def __init__(self, mode: str = "probabilities", max_batch: int = 64, input_range=(0.0, 16.0),
                 keys=(ATTACK_KEY, EVAL_KEY), flavour: str = "stealcheck"):
        self.w = np.random.default_rng(0).normal(size=(NB_FEATURES, NB_CLASSES)) * 0.3
        self.mode, self.max_batch, self.input_range, self.keys = mode, max_batch, input_range, set(keys)
        #: "stealcheck": our metadata; "triton": tensors named INPUT0 / OUTPUT0, no parameters;
        #: "labels": like a scikit-learn predict() server: one INT64 output of class labels, no parameters
        self.flavour = flavour
        self.input_name = "input" if flavour == "stealcheck" else "INPUT0"
        self.script: list[tuple[int, dict, dict]] = []
        self.pow_bits = 0
        self.challenges: set[str] = set()
        self.used: dict[str, int] = {}
        self.quota: dict[str, int] = {}  # key -> samples it may be answered (429 without Retry-After past it)
        self.requests: list[dict] = []  # key, batch size, parameters of every inference request

    def probs(self, x: np.ndarray) -> np.ndarray:
        z = x.reshape(len(x), -1).astype(np.float64) @ self.w
        e = np.exp(z - z.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        if self.mode == "label":
            out = np.zeros_like(p)
            out[np.arange(len(p)), p.argmax(1)] = 1.0
            return out
        return p

    def app(self):
        app = FastAPI()
        double = self

        @app.get("/v2/models/{name}")
        def metadata(name: str):
            if name != "digits":
                return JSONResponse({"error": f"unknown model {name}"}, status_code=404)
            if double.flavour != "stealcheck":
                out = ({"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, NB_CLASSES]} if double.flavour == "triton"
                       else {"name": "predict", "datatype": "INT64", "shape": [-1]})
                return {"name": name, "versions": ["1"], "platform": double.flavour,
                        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 1, 8, 8]}], "outputs": [out]}
            return {"name": name, "versions": ["1"], "platform": "double",
                    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
                    "outputs": [{"name": "probabilities", "datatype": "FP64", "shape": [-1, NB_CLASSES]}],
                    "parameters": {"output_mode": double.mode, "top_k": 1, "nb_classes": NB_CLASSES,
                                   "input_range": list(double.input_range), "max_batch": double.max_batch,
                                   "defence": "none"}}

        @app.post("/v2/models/{name}/infer")
        async def infer(name: str, request: Request):
            auth = request.headers.get("authorization", "")
            if not auth.startswith("Bearer "):
                return JSONResponse({"error": "missing API key"}, status_code=401)
            key = auth[len("Bearer "):]
            if key not in double.keys:
                return JSONResponse({"error": "unknown API key"}, status_code=403)
            body = await request.json()
            inputs = body.get("inputs") or []
            if not inputs:
                return JSONResponse({"error": "no inputs"}, status_code=400)
            params = body.get("parameters") or {}
            shape = inputs[0]["shape"]
            double.requests.append({"key": key, "n": shape[0], "parameters": params})
            if inputs[0].get("name") != double.input_name:
                return JSONResponse({"error": f"unexpected input name {inputs[0].get('name')!r}"}, status_code=400)
            if shape[0] > double.max_batch:
                return JSONResponse({"error": f"batch of {shape[0]} above {double.max_batch}"}, status_code=413)
            if double.script:
                status, headers, answer = double.script.pop(0)
                return JSONResponse(answer, status_code=status, headers=headers)
            if double.pow_bits:
                from stealcheck.defences.active import verify

                challenge = params.get("pow_challenge")
                if challenge is None:
                    challenge = hashlib.sha256(str(len(double.challenges)).encode()).hexdigest()[:32]
                    double.challenges.add(challenge)
                    return JSONResponse({"error": "proof of work required",
                                         "pow": {"challenge": challenge, "bits": double.pow_bits,
                                                 "algorithm": "sha256", "expires_in": 30}}, status_code=428)
                if challenge not in double.challenges or not verify(bytes.fromhex(challenge),
                                                                    int(params["pow_nonce"]), double.pow_bits):
                    return JSONResponse({"error": "wrong nonce"}, status_code=400)
                double.challenges.discard(challenge)
            quota = double.quota.get(key)
            if quota is not None and double.used.get(key, 0) + shape[0] > quota:
                return JSONResponse({"error": f"quota exhausted: {quota - double.used.get(key, 0)} left",
                                     "quota_remaining": quota - double.used.get(key, 0)}, status_code=429)
            x = np.asarray(inputs[0]["data"], dtype=np.float32).reshape(shape)
            p = double.probs(x)
            double.used[key] = double.used.get(key, 0) + len(x)
            if double.flavour == "labels":
                return {"model_name": name, "outputs": [{"name": "predict", "shape": [len(p)], "datatype": "INT64",
                                                         "data": p.argmax(1).tolist()}]}
            if double.flavour == "triton":
                return {"model_name": name, "outputs": [{"name": "OUTPUT0", "shape": list(p.shape), "datatype": "FP32",
                                                         "data": p.astype(np.float32).reshape(-1).tolist()}]}
            return {"model_name": name, "model_version": "1", "id": body.get("id", "x"),
                    "parameters": {"queries_used": double.used[key], "quota_remaining": None},
                    "outputs": [{"name": "probabilities", "shape": list(p.shape), "datatype": "FP64",
                                 "data": p.reshape(-1).tolist()}]}

        return app


@pytest.fixture
def double():
    d = Double()
    with loopback(d.app()) as url:
        d.url = url
        yield d


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("STEALCHECK_API_KEY", ATTACK_KEY)
    monkeypatch.setenv("STEALCHECK_EVAL_KEY", EVAL_KEY)


def client(double: Double, key: str = ATTACK_KEY, **kwargs) -> tuple[OIPClient, list[float]]:
    """A client of the double whose waits are recorded instead of slept."""
    waits: list[float] = []
    kwargs.setdefault("max_batch", 4)
    c = OIPClient(double.url, "digits", key, nb_classes=NB_CLASSES, sleep=waits.append, **kwargs)
    return c, waits


def inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 16, size=(n, 1, 8, 8)).astype(np.float32)


# ---------------------------------------------------------------- the client: batching, retries, quota, PoW


def test_batches_by_max_batch_and_answers_in_full_precision(double):
    c, _ = client(double, max_batch=4)
    x = inputs(10)
    p = c.predict(x)
    assert [r["n"] for r in double.requests] == [4, 4, 2]
    np.testing.assert_array_equal(p, double.probs(x))  # float64, bit for bit
    assert p.dtype == np.float64
    assert c.usage.queries == 10 and c.usage.requests == 3 and c.usage.retries == 0
    assert (c.usage.server_queries_used, c.usage.server_queries_before) == (10, 0)


def test_rate_limit_and_server_errors_are_retried_with_backoff(double):
    double.script = [(429, {"Retry-After": "3"}, {"error": "rate limited"}),
                     (503, {}, {"error": "busy"}),
                     (500, {}, {"error": "oops"})]
    c, waits = client(double, retries=3, backoff=0.25)
    x = inputs(3)
    np.testing.assert_array_equal(c.predict(x), double.probs(x))
    # Retry-After as the server says; then exponential backoff 0.25, 0.5 for the 5xx
    assert waits == [3.0, 0.5, 1.0]  # the exponent counts every failure of the request
    assert c.usage.retries == 3 and c.usage.requests == 4 and c.usage.queries == 3
    assert double.used[ATTACK_KEY] == 3  # only the answered request was charged


def test_retries_give_up_after_the_limit(double):
    double.script = [(500, {}, {"error": "down"})] * 3
    c, waits = client(double, retries=2, backoff=1.0, max_wait=1.5)
    with pytest.raises(RemoteVictimError, match="gave up after 2 retries"):
        c.predict(inputs(2))
    assert waits == [1.0, 1.5]  # doubled, capped at max_wait
    assert c.usage.queries == 0


def test_connection_errors_are_retried_then_reported():
    waits: list[float] = []
    c = OIPClient(f"http://127.0.0.1:{free_port()}", "digits", "k", nb_classes=NB_CLASSES, retries=2,
                  backoff=0.1, sleep=waits.append, timeout=2)
    with pytest.raises(RemoteVictimError, match="ConnectError.*gave up after 2 retries"):
        c.predict(inputs(1))
    assert waits == [0.1, 0.2] and c.usage.requests == 3


def test_quota_exhausted_fails_at_once(double):
    double.script = [(429, {}, {"error": "quota exhausted: 0 queries left", "quota_remaining": 0})]
    c, waits = client(double, retries=5)
    with pytest.raises(QuotaExhaustedError, match="quota for this key is exhausted.*0 queries left"):
        c.predict(inputs(2))
    assert waits == [] and c.usage.requests == 1 and c.usage.quota_remaining == 0


def test_client_errors_are_not_retried_and_say_why(double):
    c, waits = client(double, key="not-a-key", retries=5)
    with pytest.raises(RemoteVictimError, match="403.*unknown API key"):
        c.predict(inputs(1))
    assert waits == [] and c.usage.requests == 1


def test_proof_of_work_round_trip(double):
    double.pow_bits = 6
    c, _ = client(double, max_batch=8)
    x = inputs(8)
    np.testing.assert_array_equal(c.predict(x), double.probs(x))
    first, second = double.requests
    assert "pow_challenge" not in first["parameters"]
    assert second["parameters"]["pow_challenge"] in {hashlib.sha256(b"0").hexdigest()[:32]}
    assert c.usage.pow_solved == 1 and c.usage.queries == 8 and double.used[ATTACK_KEY] == 8


def test_a_refused_solution_gets_a_new_challenge(double):
    """The server forgot the challenge (it expired while the client solved it, or it restarted): the
    client asks again without a solution, gets a new challenge and solves that one."""
    double.pow_bits = 4
    double.script = [(428, {}, {"error": "proof of work required", "pow": {"challenge": "00" * 16, "bits": 4}}),
                     (400, {}, {"error": "the proof-of-work challenge expired"})]
    c, _ = client(double, max_batch=8)
    x = inputs(3)
    np.testing.assert_array_equal(c.predict(x), double.probs(x))
    assert [("pow_challenge" in r["parameters"]) for r in double.requests] == [False, True, False, True]
    assert c.usage.pow_solved == 2 and c.usage.retries == 1


def test_client_side_hard_cap(double):
    c, _ = client(double, max_queries=5)
    c.predict(inputs(4))
    with pytest.raises(BudgetExceededError, match="nothing was sent"):
        c.predict(inputs(2))
    assert double.used[ATTACK_KEY] == 4


# ---------------------------------------------------------------- metadata fill-in


def section(url: str, **extra) -> dict:
    return {"kind": "remote", "url": url, "model": "digits", **extra}


def test_metadata_fills_what_the_section_leaves_out(double, keys):
    out = complete_section(section(double.url))
    assert out["input"] == {"shape": [1, 8, 8], "range": [0.0, 16.0]}
    assert (out["nb_classes"], out["output"], out["max_batch"]) == (NB_CLASSES, "probabilities", 64)
    # what the scenario gives is kept; a smaller batch too
    out = complete_section(section(double.url, input={"range": [0.0, 8.0]}, output="label", max_batch=16))
    assert out["input"] == {"shape": [1, 8, 8], "range": [0.0, 8.0]}
    assert (out["output"], out["max_batch"]) == ("label", 16)


@pytest.mark.parametrize("extra,path,match", [
    ({"input": {"shape": [64]}}, "victim.input.shape", r"disagrees with the endpoint's input shape \[1, 8, 8\]"),
    ({"nb_classes": 3}, "victim.nb_classes", "disagrees with the endpoint's 10 classes"),
    ({"input": {"range": [-1.0, 16.0]}}, "victim.input.range", "wider than the endpoint accepts"),
    ({"model": "mnist"}, "victim.model", "has no model 'mnist'"),
])
def test_metadata_disagreements_are_errors(double, keys, extra, path, match):
    with pytest.raises(ScenarioError, match=match) as exc:
        complete_section(section(double.url, **extra))
    assert exc.value.path == path


def test_output_mode_coarser_is_fine_finer_is_an_error(keys):
    d = Double(mode="label")
    with loopback(d.app()) as url:
        assert complete_section(section(url))["output"] == "label"
        with pytest.raises(ScenarioError, match="asks for more than the endpoint gives: it serves label") as exc:
            complete_section(section(url, output="probabilities"))
        assert exc.value.path == "victim.output"


def test_too_large_batches_are_halved(double):
    double.max_batch = 3
    c, waits = client(double, max_batch=8)
    x = inputs(8)
    np.testing.assert_array_equal(c.predict(x), double.probs(x))
    assert [r["n"] for r in double.requests] == [8, 4, 2, 2, 2, 2]  # 413, 413, then halves of the halves
    assert c.max_batch == 2 and waits == []


@pytest.mark.parametrize("flavour", ["triton", "labels"])
def test_other_oip_servers(keys, flavour):
    """A server that names its tensors otherwise and declares no parameters (Triton-like), or answers labels."""
    d = Double(flavour=flavour)
    with loopback(d.app()) as url:
        with pytest.raises(ScenarioError, match="declares no input range: give victim.input.range"):
            complete_section(section(url))
        given = {"input": {"range": [0.0, 16.0]}} if flavour == "triton" else \
            {"input": {"range": [0.0, 16.0]}, "nb_classes": NB_CLASSES}
        out = complete_section(section(url, **given))
        assert (out["input_name"], out["nb_classes"]) == ("INPUT0", NB_CLASSES)
        assert (out["output_name"], out["output"]) == (("OUTPUT0", "probabilities") if flavour == "triton"
                                                        else ("predict", "label"))
        c = OIPClient(url, "digits", ATTACK_KEY, nb_classes=NB_CLASSES, input_name="INPUT0",
                      output_name=out["output_name"])
        x = inputs(5)
        got = c.predict(x)
    if flavour == "triton":
        np.testing.assert_array_equal(got, d.probs(x).astype(np.float32))
    else:
        np.testing.assert_array_equal(got, np.eye(NB_CLASSES)[d.probs(x).argmax(1)])


# ---------------------------------------------------------------- validate


def remote_scenario(url: str, **victim) -> dict:
    return tiny_scenario(
        name="remote-tiny",
        victim={"kind": "remote", "url": url, "model": "digits", **victim},
        data={"test": {"source": "digits", "split": "test"}, "attacker": {"source": "digits", "split": "all"}},
        defences=["none"], attacks=[{"knockoff": {"strategy": "random"}}], budgets=[40, 80], seeds=[0],
        evaluation={"uniform_samples": 50})


def validate(write_yaml, capsys, data: dict) -> tuple[int, str]:
    code = main(["validate", str(write_yaml(data))])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_validate_accepts_a_reachable_endpoint(double, keys, write_yaml, capsys):
    code, out = validate(write_yaml, capsys, remote_scenario(double.url))
    assert code == 0, out
    assert "valid" in out
    assert double.used == {}  # validate spends no quota


@pytest.mark.parametrize("case,match", [
    ("unreachable", r"victim.url.*is unreachable \(ConnectError"),
    ("unknown_model", r"victim.model.*has no model 'nope'"),
    ("key_unset", r"victim.api_key_env.*STEALCHECK_API_KEY \(the attacker's API key\) is not set"),
    ("key_refused", r"victim.evaluation_api_key_env.*refused the evaluation's key in \$STEALCHECK_EVAL_KEY"),
    ("shape_vs_data", r"victim.input.shape.*data.test \(sklearn 'iris'\) has 4 features but victim.input.shape is "
                      r"\[1, 8, 8\]\. \(The victim's input shape and range come from the endpoint's metadata"),
    ("needs_network", r"detectors.0.*builds networks of the victim's architecture.*remote victim"),
    ("leaf", r"victim.output.*output: leaf cannot be used with a remote victim"),
    ("needs_logits", r"detectors.0.*reads the victim's logits, which only a PyTorch victim.*this victim is 'remote'"),
    ("no_url", r"victim.url.*STEALCHECK_URL is empty"),
])
def test_validate_says_what_is_wrong(double, keys, write_yaml, capsys, monkeypatch, case, match):
    data = remote_scenario(double.url)
    if case == "unreachable":
        data["victim"]["url"] = f"http://127.0.0.1:{free_port()}"
    elif case == "unknown_model":
        data["victim"]["model"] = "nope"
    elif case == "key_unset":
        monkeypatch.delenv("STEALCHECK_API_KEY")
    elif case == "key_refused":
        monkeypatch.setenv("STEALCHECK_EVAL_KEY", "wrong")
    elif case == "shape_vs_data":
        data["data"]["test"] = {"source": "sklearn", "name": "iris"}  # 4 features against the endpoint's 8x8 inputs
    elif case == "needs_network":
        data["detectors"] = ["same"]
        data["data"]["benign"] = {"source": "digits", "split": "test"}
    elif case == "needs_logits":
        data["detectors"] = ["energy"]
        data["data"]["benign"] = {"source": "digits", "split": "test"}
    elif case == "leaf":
        data["victim"]["output"] = "leaf"
    elif case == "no_url":
        data["victim"].pop("url")
        monkeypatch.delenv("STEALCHECK_URL", raising=False)
    code, out = validate(write_yaml, capsys, data)
    assert code == 2, out
    assert re.search(match, out, flags=re.S), out
    assert "Traceback" not in out


def test_validate_stays_light(double, keys, write_yaml):
    """validate of a remote scenario contacts the endpoint without importing torch or ART."""
    import subprocess
    import sys

    path = write_yaml(remote_scenario(double.url))
    code = ("import sys; from stealcheck.cli import main; rc = main(['validate', sys.argv[1]]); "
            "bad = [m for m in ('torch', 'art') if m in sys.modules]; print(rc, bad); sys.exit(rc or bool(bad))")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("0 []")


# ---------------------------------------------------------------- a run: two identities counted apart


def test_run_counts_attacker_and_evaluation_apart(double, keys, write_yaml, tmp_path):
    import pandas as pd

    data = remote_scenario(double.url, max_batch=32)
    data["thief"] = {"architecture": "mlp", "min_steps": 10, "max_steps": 20}
    code = main(["run", str(write_yaml(data)), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    ext = rows[rows.kind == "extraction"].set_index(["budget", "metric"])["value"]
    for b in (40, 80):
        assert ext[(b, "queries_used")] == b  # counted on this side, at the oracle
        assert ext[(b, "server_queries_used")] == b  # as the server reported it for the attacker's key
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    usage = summary["remote_queries"]
    n_test = summary["victim"]["test_samples"]
    assert usage["attacker"]["queries"] == 80 == double.used[ATTACK_KEY]
    # the evaluation's own queries: the test set and the uniform inputs (raw), then honest users (utility)
    assert usage["evaluation"]["queries"] == double.used[EVAL_KEY] == n_test + 50 + n_test
    assert usage["attacker"]["key_env"] == "STEALCHECK_API_KEY"
    assert {r["key"] for r in double.requests if r["n"] and r["key"] == ATTACK_KEY}
    assert max(r["n"] for r in double.requests) <= 32
    # the metadata filled in what the file left out; the file's own view is kept apart
    assert summary["victim_filled_in"]["input"] == {"shape": [1, 8, 8], "range": [0.0, 16.0]}
    assert "input" not in summary["scenario_as_written"]["victim"]
    resolved = yaml.safe_load((tmp_path / "run" / "scenario.resolved.yaml").read_text())
    assert resolved["victim"]["input"]["shape"] == [1, 8, 8]
    assert ATTACK_KEY not in json.dumps(summary) and EVAL_KEY not in json.dumps(summary)  # keys are never written
    assert "could not build the report" not in (tmp_path / "run" / "run.log").read_text()
    assert "server_queries_used" in (tmp_path / "run" / "report.html").read_text()


def test_quota_exhausted_during_a_run_fails_the_cell_clearly(double, keys, write_yaml, tmp_path, capsys):
    data = remote_scenario(double.url)
    data["thief"] = {"architecture": "mlp", "min_steps": 10, "max_steps": 20}
    double.quota = {ATTACK_KEY: 50}  # the attack needs 80
    code = main(["run", str(write_yaml(data)), "--out", str(tmp_path / "run"), "--quiet", "--retries", "0"])
    assert code == 3
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (error,) = summary["failed_cells"].values()
    assert "QuotaExhaustedError" in error and "quota for this key is exhausted" in error
    assert double.used[ATTACK_KEY] <= 50  # never answered past the quota
    assert [r for r in double.requests if r["key"] == ATTACK_KEY][-1]["n"] > 0


def test_two_doors_and_the_budget(double, keys):
    """The attacker's door (the oracle's) and the evaluation's use their own keys; the oracle refuses a batch
    past the budget before anything is sent."""
    from stealcheck.adapters.specs import RemoteVictimParams
    from stealcheck.oracle import Oracle
    from stealcheck.registry import victims

    p = RemoteVictimParams.model_validate({k: v for k, v in complete_section(section(double.url)).items()
                                           if k not in ("kind", "output", "top_k")})
    v = victims.get("remote").obj.build(p, None)
    assert (v.input_shape, v.nb_classes, v.clip_values) == ((1, 8, 8), NB_CLASSES, (0.0, 16.0))
    assert v.info["endpoint"]["parameters"]["defence"] == "none"
    oracle = Oracle(v.attacker_predict, v.input_shape, v.nb_classes, v.clip_values, budget=10)
    x = inputs(8)
    np.testing.assert_array_equal(oracle.predict(x), double.probs(x))
    with pytest.raises(BudgetExceededError):
        oracle.predict(inputs(4, seed=2))
    np.testing.assert_array_equal(v.predict_proba(inputs(5, seed=3)), double.probs(inputs(5, seed=3)))
    assert double.used == {ATTACK_KEY: 8, EVAL_KEY: 5}
    usage = v.usage()
    assert (usage["attacker"]["queries"], usage["evaluation"]["queries"]) == (8, 5)
    assert usage["attacker"]["key_env"] == "STEALCHECK_API_KEY"
    assert usage["evaluation"]["key_env"] == "STEALCHECK_EVAL_KEY"


def test_workers_rebuild_the_completed_scenario(double, keys, write_yaml, capsys, cache_dir):
    """What a Dask worker gets (RunContext.scenario) is the completed section: it builds the same victim
    without contacting the metadata again; plan shows the remote cells as always run."""
    from stealcheck.cells import RunContext, World
    from stealcheck.cli import load_and_check

    scenario = load_and_check(str(write_yaml(remote_scenario(double.url))))
    assert scenario.as_written["victim"]["input"] == {"shape": [1, 8, 8], "range": [0.0, 16.0]}
    assert scenario.written_by_user["victim"] == {"kind": "remote", "url": double.url, "model": "digits"}
    ctx = RunContext(scenario.as_written, scenario.source_path, str(cache_dir), "test")
    w = World(ctx)  # as in a worker: rebuilt from ctx alone
    assert (w.victim.input_shape, w.victim.nb_classes) == ((1, 8, 8), NB_CLASSES)
    assert w.scenario.victim.params == scenario.victim.params
    assert main(["plan", str(write_yaml(remote_scenario(double.url)))]) == 0
    out = capsys.readouterr().out
    assert "cached" not in out.replace("0 cached", "")


@pytest.mark.slow  # starts a 2-worker Dask LocalCluster (~10 s); CI runs it with the slow set
def test_dask_workers_query_the_endpoint_with_the_completed_section(double, keys, write_yaml, tmp_path):
    """Workers rebuild the scenario from the completed section (the file gives no shape, classes or mode)
    and query the endpoint with both keys; their values are the local executor's."""
    import pandas as pd

    data = remote_scenario(double.url)
    data["attacks"] = [{"knockoff": {"strategy": "random"}}, "copycat"]
    data["thief"] = {"architecture": "mlp", "min_steps": 10, "max_steps": 20}
    path = write_yaml(data)
    assert main(["run", str(path), "--out", str(tmp_path / "local"), "--quiet"]) == 0
    used_locally = dict(double.used)
    assert main(["run", str(path), "--out", str(tmp_path / "dask"), "--quiet", "--executor", "dask",
                 "--workers", "2"]) == 0

    def values(run):
        rows = pd.read_csv(tmp_path / run / "results.csv")
        rows = rows[~rows.metric.isin(["attack_seconds", "latency_mean_ms", "latency_p95_ms", "server_queries_used"])]
        return rows.set_index(["kind", "defence", "attack", "budget", "seed", "metric"])["value"].sort_index()

    pd.testing.assert_series_equal(values("dask"), values("local"), check_exact=True)
    # the attackers' queries went to the endpoint under the attacker's key, twice as many as one run's
    assert double.used[ATTACK_KEY] == 2 * used_locally[ATTACK_KEY] == 2 * 2 * 80
