"""How fast `stealcheck serve` answers, against the same defended victim called in-process.

The victim is the quickstart's conv3 MNIST model (built-in data). For each defence (none,
reverse_sigmoid, reject driven by the fusion detector, reject driven by PRADA kept per API key) a
server runs in its own process (`stealcheck serve`, loopback only), and this process:

1. sends 300 requests one after the other at batch 1 and at batch 32, with the numbers written as
   JSON text and as raw bytes (the binary tensor data extension), and prints samples/s and p50 / p99
   latency as the client sees them (encoding and decoding included), beside the same defended
   oracle called in this process on the same batches (ratio = served / in-process samples/s; goals:
   >= 0.5 at batch 32, p99 <= 20 ms at batch 1 without a detector);
2. (for `none` only) runs 50 concurrent clients x 1,000 requests (batch 1) and counts errors and
   5xx answers (goal: 0 and 0).

Every loop is bounded and every request goes to 127.0.0.1. Both sides share this machine's cores:
on 2 cores the client's own JSON work competes with the server's.

    python benchmarks/serve_load.py [--clients 50] [--requests 1000] [--sequential 300]
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

KEY = "benchmark-key-0123456789abcdef"
DEFENCES = [("none", "none"), ("reverse_sigmoid", {"reverse_sigmoid": {"beta": 1.0, "gamma": 0.2}}),
            ("reject+fusion", {"plugin": "reject", "id": "reject_fusion", "params": {"detector": "fusion"}}),
            ("reject+prada", {"plugin": "reject", "id": "reject_prada", "params": {"detector": "prada"}})]


def scenario_file(folder: Path) -> Path:
    import yaml
    from importlib import resources

    text = (resources.files("stealcheck.scenarios") / "quickstart.yaml").read_text()
    data = yaml.safe_load(text)
    data = copy.deepcopy(data)
    data.pop("expect", None)
    data["name"] = "serve_load"
    data["detectors"] = ["fusion", "prada"]
    data["defences"] = [d for _, d in DEFENCES]
    path = folder / "serve_load.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(scenario: Path, defence_id: str, keys: Path, audit: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stealcheck", "serve", str(scenario), "--defence", defence_id,
                             "--keys", str(keys), "--port", str(port), "--audit-log", str(audit)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server stopped: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not start within 15 minutes")


def body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def sequential(url: str, x: np.ndarray, batch: int, n: int, binary: bool, key: str) -> np.ndarray:
    """Seconds per request, as a client sees them: encoding the batch, the round trip, decoding the answer."""
    from stealcheck.oip import decode_response, encode_request

    seconds = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        for i in range(n):
            start = (i * batch) % (len(x) - batch)
            t0 = time.perf_counter()
            content, headers = encode_request(x[start:start + batch], binary=binary)
            r = c.post("/v2/models/serve_load/infer", content=content, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
            decode_response(r.content, r.headers.get("inference-header-content-length"))
            seconds.append(time.perf_counter() - t0)
    return np.asarray(seconds)


def in_process(oracle, x: np.ndarray, batch: int, n: int, client: str) -> np.ndarray:
    seconds = []
    for i in range(n):
        start = (i * batch) % (len(x) - batch)
        t0 = time.perf_counter()
        oracle.predict(x[start:start + batch], client_id=client)
        seconds.append(time.perf_counter() - t0)
    return np.asarray(seconds)


def load(url: str, x: np.ndarray, clients: int, requests: int) -> dict:
    errors, server_errors, done = [], [], [0]
    lock = threading.Lock()

    def worker(k: int):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
            for i in range(requests):
                try:
                    r = c.post("/v2/models/serve_load/infer", json=body(x[(k * requests + i) % len(x)][None]))
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    done[0] += 1
                    if r.status_code >= 500:
                        server_errors.append(r.status_code)
                    elif r.status_code != 200:
                        errors.append(r.status_code)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": clients * requests, "answered": done[0], "errors": len(errors), "5xx": len(server_errors),
            "seconds": time.perf_counter() - t0, "examples": errors[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=1000, help="requests per client in the load test")
    ap.add_argument("--sequential", type=int, default=300, help="requests per latency measurement")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the server and this process share the cores
    import torch

    torch.set_num_threads(1)
    from stealcheck.cache import default_cache_dir
    from stealcheck.cells import RunContext, World
    from stealcheck.rundir import package_versions
    from stealcheck.scenario import load_scenario

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = scenario_file(tmp)
        keys = tmp / "keys.yaml"
        # One key per measurement: PRADA keeps a history per key, whose cost grows with its length, so
        # every measurement starts from a fresh client (the in-process oracle too: a fresh one each time).
        keys.write_text("keys:\n" + "".join(f"  - {{client: c{i}, key: {KEY}-{i}}}\n" for i in range(8))
                        + f"  - {{client: load, key: {KEY}}}\n")
        scenario = load_scenario(path)
        ctx = RunContext(scenario.as_written, scenario.source_path, str(default_cache_dir()),
                         package_versions()["stealcheck"])
        print("building the victim and fitting the detectors (cached after the first run)...", flush=True)
        w = World(ctx, scenario)
        w.detectors()
        x = w.test.x[:2048].astype(np.float32)
        rows = []
        for (label, _), d in zip(DEFENCES, scenario.defences):  # the scenario lists them in this order
            defence_id = d.id
            proc, url = start_server(path, defence_id, keys, tmp / f"{label}.jsonl")
            try:
                k = 0
                for batch in (1, 32):
                    local = in_process(w.oracle(defence_id, None), x, batch, args.sequential, f"in-process-{batch}")
                    for encoding in ("json", "binary"):
                        served = sequential(url, x, batch, args.sequential, encoding == "binary", f"{KEY}-{k}")
                        k += 1
                        rows.append((label, batch, encoding, batch / served.mean(), np.percentile(served, 50) * 1e3,
                                     np.percentile(served, 99) * 1e3, batch / local.mean(),
                                     (batch / served.mean()) / (batch / local.mean())))
                        print("  " + fmt(rows[-1]), flush=True)
                if label == "none" and args.clients and args.requests:
                    result = load(url, x, args.clients, args.requests)
                    print(f"  load: {args.clients} clients x {args.requests} requests: {result['answered']} answered, "
                          f"{result['errors']} errors, {result['5xx']} 5xx, {result['seconds']:.1f} s "
                          f"({result['requests'] / result['seconds']:.0f} requests/s) {result['examples']}",
                          flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        print()
        print(f"{'defence':<16} {'batch':>5} {'encoding':>8} {'served/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'in-proc/s':>9} {'ratio':>6}")
        for r in rows:
            print(fmt(r))
        b32 = [r for r in rows if r[1] == 32]
        b1 = [r for r in rows if r[1] == 1 and r[0] in ("none", "reverse_sigmoid")]
        for encoding in ("json", "binary"):
            ok = all(r[7] >= 0.5 for r in b32 if r[2] == encoding)
            print(f"goal served/in-process >= 0.5 at batch 32 ({encoding}): {'met' if ok else 'NOT met'} "
                  f"({', '.join(f'{r[0]} {r[7]:.2f}' for r in b32 if r[2] == encoding)})")
            ok = all(r[5] <= 20 for r in b1 if r[2] == encoding)
            print(f"goal p99 <= 20 ms at batch 1 without a detector ({encoding}): {'met' if ok else 'NOT met'} "
                  f"({', '.join(f'{r[0]} {r[5]:.1f} ms' for r in b1 if r[2] == encoding)})")


def fmt(r) -> str:
    return f"{r[0]:<16} {r[1]:>5} {r[2]:>8} {r[3]:>9.0f} {r[4]:>7.2f} {r[5]:>7.2f} {r[6]:>9.0f} {r[7]:>6.2f}"

if __name__ == "__main__":
    main()
