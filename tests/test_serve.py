"""stealcheck serve: the Open Inference Protocol endpoints, keys, quotas, input validation, proof-of-work,
the audit log. Every server listens on 127.0.0.1 on a free port, started and stopped here."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from stealcheck.defences.active import solve
from stealcheck.errors import ScenarioError
from stealcheck.scenario import build_scenario
from stealcheck.serve import (AuditLog, Client, KeyRing, Limits, background, build_service, hash_key, load_keys)

from conftest import tiny_scenario

ALICE, BOB, OWNER = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef", "owner-key-0123456789abcdef"


def _scenario(cache: Path):
    data = tiny_scenario(
        detectors=["msp", "prada"],
        defences=["none", {"reverse_sigmoid": {"beta": 1.0, "gamma": 0.2}},
                  {"pow": {"detector": "msp", "min_bits": 4, "max_bits": 6, "target_fpr": 0.05, "seed": 0}},
                  {"reject": {"detector": "prada"}}],
        output={"cache_dir": str(cache), "dir": str(cache / "runs")})
    return build_scenario(data)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return _scenario(tmp_path_factory.mktemp("serve-cache"))


def _keys(quota_alice: int | None = None, rate: float | None = None) -> list[Client]:
    return [Client("alice", hash_key(ALICE), quota=quota_alice, rate_limit=rate, burst=8 if rate else float("inf"),
                   tokens=8 if rate else float("inf")),
            Client("bob", hash_key(BOB)),
            Client("owner", hash_key(OWNER), admin=True, undefended=True)]


def _service(scenario, tmp_path, defence="none", **kw):
    return build_service(scenario, defence, keys=kw.pop("keys", _keys()), audit_log=tmp_path / "audit.jsonl", **kw)


def _body(x: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            **extra}


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _digits(n: int, offset: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().data[offset:offset + n].astype(np.float32) / 16.0
    return x.reshape(n, 1, 8, 8)


def test_endpoints_follow_the_protocol(scenario, tmp_path):
    service = _service(scenario, tmp_path, defence="reverse_sigmoid")
    with background(service) as url, httpx.Client(base_url=url) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        # The model's metadata is for key holders; health checks are open (load balancers).
        assert c.get("/v2/models/tiny").status_code == 401
        assert c.get("/v2/models/tiny/ready", headers=_auth("not-a-key-0123456789")).status_code == 403
        assert c.get("/v2/models/other", headers=_auth("not-a-key-0123456789")).status_code == 403  # no names leak
        c.headers.update(_auth(BOB))
        assert c.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
        meta = c.get("/v2/models/tiny").json()
        assert meta["name"] == "tiny" and meta["inputs"] == [{"name": "input", "datatype": "FP32",
                                                               "shape": [-1, 1, 8, 8]}]
        assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP64", "shape": [-1, 10]}]
        assert meta["parameters"]["output_mode"] == "probabilities"
        assert meta["parameters"]["input_range"] == [0.0, 1.0]
        assert c.get("/v2/models/other").status_code == 404
        assert c.get("/v2/models/other").json()["error"]

        x = _digits(5)
        r = c.post("/v2/models/tiny/infer", json=_body(x, id="req-1"), headers=_auth(ALICE))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_name"] == "tiny" and body["id"] == "req-1"
        out = body["outputs"][0]
        assert out["name"] == "probabilities" and out["datatype"] == "FP64" and out["shape"] == [5, 10]
        # Exactly the in-process oracle's float64 answer behind the same (stateless) defence: JSON keeps every bit.
        np.testing.assert_array_equal(np.asarray(out["data"]).reshape(5, 10),
                                      service.model.oracle.predict(x, client_id="in-process"))
        assert body["parameters"]["queries_used"] == 5

        nested = {"inputs": [{"name": "input", "shape": [5, 1, 8, 8], "datatype": "FP32", "data": x.tolist()}],
                  "outputs": [{"name": "probabilities"}]}
        r2 = c.post("/v2/models/tiny/versions/1/infer", json=nested, headers=_auth(ALICE))
        assert r2.status_code == 200 and r2.json()["outputs"][0]["data"] == out["data"]


def test_keys_missing_wrong_right_and_admin_only_endpoints(scenario, tmp_path):
    with background(_service(scenario, tmp_path)) as url, httpx.Client(base_url=url) as c:
        x = _body(_digits(1))
        r = c.post("/v2/models/tiny/infer", json=x)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and r.json()["error"]
        assert c.post("/v2/models/tiny/infer", json=x, headers={"Authorization": "Basic abc"}).status_code == 401
        assert c.post("/v2/models/tiny/infer", json=x, headers=_auth("not-a-key-0123456789")).status_code == 403
        assert c.post("/v2/models/tiny/infer", json=x, headers=_auth(ALICE)).status_code == 200
        assert c.get("/v2/stealcheck/stats", headers=_auth(ALICE)).status_code == 403
        assert c.get("/metrics").status_code == 401
        stats = c.get("/v2/stealcheck/stats", headers=_auth(OWNER)).json()
        assert stats["clients"]["alice"]["queries"] == 1 and stats["clients"]["bob"]["queries"] == 0
        metrics = c.get("/metrics", headers=_auth(OWNER)).text
        assert 'stealcheck_requests_total{endpoint="infer",status="200"} 1.0' in metrics
        assert 'stealcheck_requests_total{endpoint="infer",status="401"} 2.0' in metrics


def test_quota_is_exact_under_16_concurrent_clients(scenario, tmp_path):
    quota = 300
    service = _service(scenario, tmp_path, keys=_keys(quota_alice=quota))
    answered, refused_small, errors = [], [], []
    lock = threading.Lock()
    x = _digits(5)

    def worker(url: str, k: int):
        sizes = [3, 1, 4, 1, 5]
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(400):  # bounded: the quota runs out long before
                n = sizes[(i + k) % len(sizes)]
                r = c.post("/v2/models/tiny/infer", json=_body(x[:n]), headers=_auth(ALICE))
                with lock:
                    if r.status_code == 200:
                        answered.append(r.json()["outputs"][0]["shape"][0])
                    elif r.status_code == 429:
                        assert "remaining" in r.json()["error"] and "retry-after" not in r.headers
                        if n == 1:
                            refused_small.append(r.json()["quota_remaining"])
                            return
                    else:
                        errors.append((r.status_code, r.text))
                        return

    with background(service) as url:
        threads = [threading.Thread(target=worker, args=(url, k)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = httpx.get(f"{url}/v2/stealcheck/stats", headers=_auth(OWNER)).json()["clients"]["alice"]
    assert not errors
    assert sum(answered) == quota  # never more; and every client stopped on a refused single sample
    assert refused_small and set(refused_small) == {0}
    assert stats["queries"] == quota and stats["quota_remaining"] == 0
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert sum(rec["charged"] for rec in lines) == quota


BAD_PAYLOADS = {
    "malformed JSON": b'{"inputs": [',
    "not an object": b"[1, 2, 3]",
    "empty body": b"",
    "missing inputs": b'{"id": "x"}',
    "missing data": b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32"}]}',
    "unknown field": b'{"inputs": [], "extra": 1}',
    "wrong datatype": {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "INT8", "data": [0] * 64}]},
    "bogus datatype": {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FLOAT", "data": [0] * 64}]},
    "wrong shape": {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
    "shape/data mismatch": {"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                        "data": [0.0] * 64}]},
    "ragged nested data": {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                       "data": [[[[0.0] * 8] * 7 + [[0.0] * 7]]]}]},
    "NaN": b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [NaN'
           + b", 0" * 63 + b"]}]}",
    "infinity": b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [1e999'
                + b", 0" * 63 + b"]}]}",
    "out of range": {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                 "data": [2.0] + [0.0] * 63}]},
    "strings": {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ["0.1"] * 64}]},
    "booleans": {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [True] * 64}]},
    "nested objects": {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                   "data": [{"a": 1}] * 64}]},
    "object as input": {"inputs": {"name": "input"}},
    "wrong input name": {"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]},
    "unknown output": {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}],
                       "outputs": [{"name": "logits"}]},
    "zero batch": {"inputs": [{"name": "input", "shape": [0, 1, 8, 8], "datatype": "FP32", "data": []}]},
    "100k batch": {"inputs": [{"name": "input", "shape": [100_000, 1, 8, 8], "datatype": "FP32",
                               "data": [0.0] * 64}]},
    "8 MB body": b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ['
                 + b"0.0, " * (8 * 1024 * 1024 // 5) + b"0.0]}]}",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


def test_bad_payloads_get_4xx_json_errors_and_the_server_stays_healthy(scenario, tmp_path):
    with background(_service(scenario, tmp_path)) as url, httpx.Client(base_url=url, timeout=60) as c:
        for what, payload in BAD_PAYLOADS.items():
            content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            r = c.post("/v2/models/tiny/infer", content=content, headers={**_auth(ALICE),
                                                                           "Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:200])
            assert isinstance(r.json().get("error"), str) and "Traceback" not in r.text, what
            assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.post("/v2/models/tiny/infer", content=BAD_PAYLOADS["8 MB body"],
                      headers=_auth(ALICE)).status_code == 413
        assert c.post("/v2/models/tiny/infer", json=BAD_PAYLOADS["100k batch"],
                      headers=_auth(ALICE)).status_code == 413
        assert c.put("/v2/models/tiny/infer", headers=_auth(ALICE)).status_code == 405
        r = c.post("/v2/models/tiny/infer", json=_body(_digits(2)), headers=_auth(ALICE))
        assert r.status_code == 200
        # Nothing refused was charged.
        assert c.get("/v2/stealcheck/stats", headers=_auth(OWNER)).json()["clients"]["alice"]["queries"] == 2


def test_clip_inputs_instead_of_refusing(scenario, tmp_path):
    with background(_service(scenario, tmp_path, limits=Limits(clip_inputs=True))) as url:
        x = _digits(1)
        x[0, 0, 0, 0] = 3.0
        r = httpx.post(f"{url}/v2/models/tiny/infer", json=_body(x), headers=_auth(ALICE))
        assert r.status_code == 200


def test_rate_limit_answers_429_with_retry_after(scenario, tmp_path):
    with background(_service(scenario, tmp_path, keys=_keys(rate=2.0))) as url, httpx.Client(base_url=url) as c:
        x = _digits(8)
        assert c.post("/v2/models/tiny/infer", json=_body(x), headers=_auth(ALICE)).status_code == 200  # the burst
        r = c.post("/v2/models/tiny/infer", json=_body(x[:4]), headers=_auth(ALICE))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "rate limit" in r.json()["error"]
        assert c.post("/v2/models/tiny/infer", json=_body(_digits(9)), headers=_auth(ALICE)).status_code == 413
        assert c.post("/v2/models/tiny/infer", json=_body(x), headers=_auth(BOB)).status_code == 200  # per key


def test_proof_of_work_round_trip(scenario, tmp_path):
    service = _service(scenario, tmp_path, defence="pow")
    pow_defence = service.model.pow
    rng = np.random.default_rng(0)
    candidates = rng.uniform(0, 1, (400, 1, 8, 8)).astype(np.float32) ** 3  # off the data
    scores = pow_defence.detector.score(candidates)
    noise = candidates[np.argsort(-scores)[:4]]  # the most suspicious, above the threshold
    assert (np.sort(scores)[-4:] > pow_defence.tau).all()
    digits = _digits(100, offset=1500)
    honest_x = digits[np.argmin(pow_defence.detector.score(digits))][None]
    with background(service) as url, httpx.Client(base_url=url) as c:
        honest = c.post("/v2/models/tiny/infer", json=_body(honest_x), headers=_auth(ALICE))
        assert honest.status_code == 200  # a natural digit below the threshold pays nothing
        r = c.post("/v2/models/tiny/infer", json=_body(noise), headers=_auth(ALICE))
        assert r.status_code == 428, r.text
        pow_ = r.json()["pow"]
        assert pow_["algorithm"] == "sha256" and 4 <= pow_["bits"] <= 6 + 2  # 4 queries: up to 2 bits more
        nonce = solve(bytes.fromhex(pow_["challenge"]), pow_["bits"])
        params = {"pow_challenge": pow_["challenge"], "pow_nonce": nonce}
        wrong = c.post("/v2/models/tiny/infer", json=_body(noise[:3], parameters=params), headers=_auth(ALICE))
        assert wrong.status_code == 400 and "other inputs" in wrong.json()["error"]
        # The failed attempt used the challenge up: ask again, then answer right.
        r = c.post("/v2/models/tiny/infer", json=_body(noise), headers=_auth(ALICE))
        pow_ = r.json()["pow"]
        bad = {"pow_challenge": pow_["challenge"], "pow_nonce": solve(bytes.fromhex(pow_["challenge"]),
                                                                        pow_["bits"]) + 1}
        r_bad = c.post("/v2/models/tiny/infer", json=_body(noise, parameters=bad), headers=_auth(ALICE))
        assert r_bad.status_code == 400
        r = c.post("/v2/models/tiny/infer", json=_body(noise), headers=_auth(ALICE))
        pow_ = r.json()["pow"]
        good = {"pow_challenge": pow_["challenge"], "pow_nonce": solve(bytes.fromhex(pow_["challenge"]), pow_["bits"])}
        ok = c.post("/v2/models/tiny/infer", json=_body(noise, parameters=good), headers=_auth(ALICE))
        assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [4, 10]
        again = c.post("/v2/models/tiny/infer", json=_body(noise, parameters=good), headers=_auth(ALICE))
        assert again.status_code == 400  # single use
        stats = c.get("/v2/stealcheck/stats", headers=_auth(OWNER)).json()["clients"]["alice"]
    assert stats["queries"] == 1 + 4  # challenges cost nothing; answered batches do
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records if r["client"] == "alice"] == [200, 428, 428, 428, 200]
    assert all("score_max" in r for r in records[:4])


def test_prada_is_kept_per_key_and_flags_reach_the_log(scenario, tmp_path):
    service = _service(scenario, tmp_path, defence="reject")
    rng = np.random.default_rng(1)
    current, stream = _digits(20, offset=1000), []
    for _ in range(5):  # a JBDA-like stream: each round, every sample pushed by a fixed step of 0.1 per pixel
        new = np.clip(current + 0.1 * rng.choice([-1.0, 1.0], size=current.shape), 0, 1).astype(np.float32)
        stream.append(new)
        current = np.concatenate([current, new])
    stream = np.concatenate([_digits(20, offset=1000), *stream])
    with background(service) as url, httpx.Client(base_url=url) as c:
        for i in range(0, len(stream), 64):
            r = c.post("/v2/models/tiny/infer", json=_body(stream[i:i + 64]), headers=_auth(ALICE))
            assert r.status_code == 200
        for i in range(10):  # natural digits from another key
            assert c.post("/v2/models/tiny/infer", json=_body(_digits(20, offset=20 * i)),
                          headers=_auth(BOB)).status_code == 200
        clients = c.get("/v2/stealcheck/stats", headers=_auth(OWNER)).json()["clients"]
    assert clients["alice"]["flagged"] and clients["alice"]["answered"] < clients["alice"]["queries"]
    assert not clients["bob"]["flagged"] and clients["bob"]["answered"] == clients["bob"]["queries"] == 200
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(r["flagged"] for r in records if r["client"] == "alice")


def test_quotas_survive_a_restart_and_a_torn_log_line(scenario, tmp_path):
    keys = _keys(quota_alice=50)
    with background(_service(scenario, tmp_path, keys=keys)) as url:
        r = httpx.post(f"{url}/v2/models/tiny/infer", json=_body(_digits(30)), headers=_auth(ALICE))
        assert r.json()["parameters"] == {"queries_used": 30, "quota_remaining": 20}
    with (tmp_path / "audit.jsonl").open("a") as f:
        f.write('{"client": "alice", "charged": 1')  # what a kill -9 mid-write leaves
    with background(_service(scenario, tmp_path, keys=_keys(quota_alice=50))) as url:
        r = httpx.post(f"{url}/v2/models/tiny/infer", json=_body(_digits(21)), headers=_auth(ALICE))
        assert r.status_code == 429 and r.json()["quota_remaining"] == 20
        r = httpx.post(f"{url}/v2/models/tiny/infer", json=_body(_digits(20)), headers=_auth(ALICE))
        assert r.status_code == 200 and r.json()["parameters"]["quota_remaining"] == 0
    log = AuditLog(tmp_path / "audit.jsonl")
    assert log.charged["alice"] == 50
    log.close()


def test_undefended_key_gets_the_raw_victim(scenario, tmp_path):
    service = _service(scenario, tmp_path, defence="reverse_sigmoid")
    x = _digits(3)
    with background(service) as url:
        owner = httpx.post(f"{url}/v2/models/tiny/infer", json=_body(x), headers=_auth(OWNER)).json()
        alice = httpx.post(f"{url}/v2/models/tiny/infer", json=_body(x), headers=_auth(ALICE)).json()
    raw = service.model.raw_predict(x)
    np.testing.assert_array_equal(np.asarray(owner["outputs"][0]["data"]).reshape(3, 10), raw)
    assert not np.allclose(np.asarray(alice["outputs"][0]["data"]).reshape(3, 10), raw)


def test_keys_file_errors_point_at_the_entry(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - client: a\n    key: short\n")
    with pytest.raises(ScenarioError, match=r"keys.yaml:3.*at least 16"):
        load_keys(path, 256)
    path.write_text("keys:\n  - client: a\n    key: aaaaaaaaaaaaaaaaaaaa\n    key_sha256: " + "ab" * 32 + "\n")
    with pytest.raises(ScenarioError, match="exactly one of 'key' and 'key_sha256'"):
        load_keys(path, 256)
    path.write_text("keys:\n  - {client: a, key: aaaaaaaaaaaaaaaaaaaa}\n  - {client: b, key: aaaaaaaaaaaaaaaaaaaa}\n")
    with pytest.raises(ScenarioError, match="already given"):
        load_keys(path, 256)
    path.write_text("keys:\n  - {client: a, key: aaaaaaaaaaaaaaaaaaaa, qouta: 5}\n")
    with pytest.raises(ScenarioError, match="qouta"):
        load_keys(path, 256)
    path.write_text("keys:\n  - {client: a, key_sha256: " + hash_key("aaaaaaaaaaaaaaaaaaaa").hex()
                    + ", quota: 5, rate_limit: 2.5}\n")
    (client,) = load_keys(path, 256)
    assert client.quota == 5 and client.burst == 256 and client.digest == hash_key("aaaaaaaaaaaaaaaaaaaa")
    ring = KeyRing([client])
    assert ring.authenticate("Bearer aaaaaaaaaaaaaaaaaaaa") is client


def test_cli_serve_needs_keys_or_no_auth_and_a_known_defence(tmp_path, capsys):
    from stealcheck.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "quickstart", "--defence", "none"])
    assert exc.value.code == 2 and "--keys" in capsys.readouterr().err
    assert main(["serve", "quickstart", "--defence", "reverse_sigmod", "--no-auth"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_binary_tensor_data_extension(scenario, tmp_path):
    # Triton's clients send inputs as raw bytes by default; answers come back bit-identical to JSON ones.
    from stealcheck import oip

    x = _digits(6)
    with background(_service(scenario, tmp_path)) as url, httpx.Client(base_url=url) as c:
        assert "binary_tensor_data" in c.get("/v2").json()["extensions"]
        as_json = c.post("/v2/models/tiny/infer", json=_body(x), headers=_auth(ALICE)).json()
        content, headers = oip.encode_request(x, binary=True)
        r = c.post("/v2/models/tiny/infer", content=content, headers={**headers, **_auth(ALICE)})
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        body, arrays = oip.decode_response(r.content, r.headers.get("inference-header-content-length"))
        assert body["outputs"][0]["parameters"]["binary_data_size"] == 6 * 10 * 8
        np.testing.assert_array_equal(arrays["probabilities"],
                                      np.asarray(as_json["outputs"][0]["data"]).reshape(6, 10))
        # Binary input, JSON output (no binary_data asked for).
        head = json.dumps({"inputs": [{"name": "input", "shape": [6, 1, 8, 8], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 6 * 64 * 4}}]}).encode()
        r = c.post("/v2/models/tiny/infer", content=head + x.astype("<f4").tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(head)), **_auth(ALICE)})
        assert r.json()["outputs"][0]["data"] == as_json["outputs"][0]["data"]
        for bad_head, raw, hlen in [
            (head, x.astype("<f4").tobytes()[:-4], None),  # short
            (head, x.astype("<f4").tobytes() + b"\0" * 4, None),  # long
            (head, x.astype("<f4").tobytes(), "99999999"),  # header length past the body
            (head, x.astype("<f4").tobytes(), "abc"),
            (json.dumps(_body(x)).encode(), b"\0" * 8, None),  # binary bytes nobody declared
            (head, np.full(6 * 64, np.nan, dtype="<f4").tobytes(), None),  # NaN in binary
        ]:
            r = c.post("/v2/models/tiny/infer", content=bad_head + raw,
                       headers={"Inference-Header-Content-Length": hlen or str(len(bad_head)), **_auth(ALICE)})
            assert r.status_code == 400 and r.json()["error"], r.text
        assert c.get("/v2/health/ready").status_code == 200


def test_leaf_output_of_a_served_tree(tmp_path):
    # BigML's API, served: the leaf mode answers each query's node id beside its probabilities.
    data = {"name": "tree", "victim": {"kind": "sklearn", "model": "decision_tree", "input": {"shape": [13]},
                                       "output": "leaf"},
            "data": {"victim_train": {"source": "sklearn", "name": "wine", "split": "train"},
                     "test": {"source": "sklearn", "name": "wine", "split": "test"}},
            "defences": ["none"], "attacks": [{"path_finding": {"variant": "path"}}], "budgets": [50], "seeds": [0],
            "output": {"cache_dir": str(tmp_path / "cache"), "dir": str(tmp_path / "runs")}}
    service = build_service(build_scenario(data), "none", keys=None, audit_log=tmp_path / "audit.jsonl")
    x = np.random.default_rng(0).uniform(0, 1, (5, 13)).astype(np.float32)
    with background(service) as url:
        meta = httpx.get(f"{url}/v2/models/tree").json()
        assert meta["outputs"][1] == {"name": "leaf", "datatype": "INT64", "shape": [-1]}
        body = httpx.post(f"{url}/v2/models/tree/infer", json=_body(x)).json()
        leaf = httpx.post(f"{url}/v2/models/tree/infer", json=_body(x, outputs=[{"name": "leaf"}])).json()
    assert [o["name"] for o in body["outputs"]] == ["probabilities", "leaf"]
    assert leaf["outputs"][0]["data"] == list(service.model.leaf_predict(x)) == body["outputs"][1]["data"]
    assert service.keys.clients["anonymous"].used == 10  # --no-auth: one anonymous client, still counted
