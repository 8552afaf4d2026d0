"""kill -9 of `stealcheck serve` in the middle of a remote run; after a restart `run --resume` finishes and
no key's quota was reset. Real processes (the server must die without a chance to flush anything), on a free
port of 127.0.0.1, started and stopped here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pandas as pd
import yaml

from conftest import tiny_scenario

ATTACK_KEY, EVAL_KEY = "attacker-key-0123456789", "evaluation-key-0123456789"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(scenario, keys, audit, port, env):
    proc = subprocess.Popen([sys.executable, "-m", "stealcheck", "serve", str(scenario), "--defence", "none",
                             "--keys", str(keys), "--port", str(port), "--audit-log", str(audit)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start")


def _charged(audit) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in audit.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out[rec["client"]] = out.get(rec["client"], 0) + rec["charged"]
    return out


def test_kill_9_the_server_mid_run_then_resume(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "STEALCHECK_CACHE_DIR": str(cache), "STEALCHECK_API_KEY": ATTACK_KEY,
           "STEALCHECK_EVAL_KEY": EVAL_KEY, "OMP_NUM_THREADS": "1"}
    served = tiny_scenario(name="wire", defences=["none"], attacks=[{"knockoff": {"strategy": "random"}}],
                           budgets=[40, 80, 120, 160], seeds=[0, 1, 2], evaluation={"uniform_samples": 50},
                           thief={"architecture": "mlp", "min_steps": 150, "max_steps": 150})
    (tmp_path / "wire.yaml").write_text(yaml.safe_dump(served))
    port = _port()
    remote = {**served, "name": "wire-remote", "defences": ["none"],
              "victim": {"kind": "remote", "url": f"http://127.0.0.1:{port}", "model": "wire", "retries": 2,
                         "backoff": 0.1, "max_wait": 0.5, "max_batch": 20}}
    del remote["data"]["victim_train"]
    (tmp_path / "remote.yaml").write_text(yaml.safe_dump(remote))
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"client": "attacker", "key": ATTACK_KEY, "quota": 100_000},
        {"client": "evaluation", "key": EVAL_KEY, "undefended": True, "admin": True}]}))
    audit = tmp_path / "audit.jsonl"
    run_dir = tmp_path / "run"

    server = _serve(tmp_path / "wire.yaml", keys, audit, port, env)
    run = subprocess.Popen([sys.executable, "-m", "stealcheck", "run", str(tmp_path / "remote.yaml"), "--out",
                            str(run_dir), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env)
    try:
        deadline = time.monotonic() + 300
        while _charged(audit).get("attacker", 0) < 80:  # the first cell is past its second checkpoint
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read() if run.poll() else "slow"
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)
        server.wait()
        before = _charged(audit)
        out, _ = run.communicate(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 3, out  # cells failed after their retries; the run is partial
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["failed_cells"]
    assert 80 <= before["attacker"] < 3 * 160

    server = _serve(tmp_path / "wire.yaml", keys, audit, port, env)
    try:
        stats = httpx.get(f"http://127.0.0.1:{port}/v2/stealcheck/stats",
                          headers={"Authorization": f"Bearer {EVAL_KEY}"}).json()["clients"]
        assert stats["attacker"]["queries"] == before["attacker"]  # nothing reset by the restart
        assert stats["attacker"]["quota_remaining"] == 100_000 - before["attacker"]
        resumed = subprocess.run([sys.executable, "-m", "stealcheck", "run", str(tmp_path / "remote.yaml"),
                                  "--resume", "--out", str(run_dir), "--quiet"], capture_output=True, text=True,
                                 env=env, timeout=600)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        after = httpx.get(f"http://127.0.0.1:{port}/v2/stealcheck/stats",
                          headers={"Authorization": f"Bearer {EVAL_KEY}"}).json()["clients"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and not summary.get("failed_cells")
    rows = pd.read_csv(run_dir / "results.csv")
    fid = rows[(rows.kind == "extraction") & (rows.metric == "fidelity")]
    assert sorted(zip(fid.seed, fid.budget)) == sorted((s, b) for s in (0, 1, 2) for b in (40, 80, 120, 160))
    used = rows[(rows.kind == "extraction") & (rows.metric == "queries_used")]
    assert (used.value == used.budget).all()
    # The server's count only grew: what the resumed cells spent came on top of what it had before the kill.
    assert after["attacker"]["queries"] > before["attacker"]
    assert _charged(audit)["attacker"] == after["attacker"]["queries"]
