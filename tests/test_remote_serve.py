"""kind: remote against `stealcheck serve` itself: a scenario run through the wire gives the in-process values.

The server (the real app of harness/serve.py, the scenario's victim behind one of its defences) is
started by the test on a free port of 127.0.0.1 and stopped by it.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from conftest import tiny_scenario
from stealcheck.cli import load_and_check, main

ATTACK_KEY, EVAL_KEY = "attacker-key-0123456789", "evaluation-key-0123456789"
SMALL_KEY = "small-quota-key-0123456789"
#: timings differ between any two runs; server_queries_used exists only through the wire
NOT_COMPARED = {"attack_seconds", "latency_mean_ms", "latency_p95_ms", "server_queries_used"}


def in_process_scenario() -> dict:
    return tiny_scenario(
        name="wire", defences=["none", "reverse_sigmoid"],
        attacks=[{"knockoff": {"strategy": "random"}}, "copycat"], budgets=[60, 120], seeds=[0],
        thief={"architecture": "mlp", "min_steps": 20, "max_steps": 30}, evaluation={"uniform_samples": 100})


def remote_scenario(url: str, **victim) -> dict:
    s = in_process_scenario()
    s["name"] = "wire-remote"
    s["victim"] = {"kind": "remote", "url": url, "model": "wire", **victim}
    s["defences"] = ["none"]  # the defence is the server's
    del s["data"]["victim_train"]  # nothing is trained on this side
    return s


@pytest.fixture
def served(tmp_path, write_yaml, monkeypatch):
    """Start `stealcheck serve`'s app for the in-process scenario behind a defence; yield (url, service)."""
    from stealcheck.serve import Limits, background, build_service, load_keys

    monkeypatch.setenv("STEALCHECK_API_KEY", ATTACK_KEY)
    monkeypatch.setenv("STEALCHECK_EVAL_KEY", EVAL_KEY)
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"client": "attacker", "key": ATTACK_KEY, "quota": 10_000},
        # the owner's evaluation key: undefended answers, as the in-process run's raw victim
        {"client": "evaluation", "key": EVAL_KEY, "undefended": True},
        {"client": "small", "key": SMALL_KEY, "quota": 10}]}))

    def start(defence: str, **changes):
        scenario = load_and_check(str(write_yaml({**in_process_scenario(), **changes}, "wire.yaml")))
        service = build_service(scenario, defence, keys=load_keys(keys, 256), audit_log=tmp_path / "audit.jsonl",
                                limits=Limits())
        return background(service), service

    return start


def results(run_dir) -> pd.DataFrame:
    rows = pd.read_csv(run_dir / "results.csv")
    return rows[~rows.metric.isin(NOT_COMPARED)]


def test_a_run_through_serve_gives_the_in_process_values(served, write_yaml, tmp_path):
    local_dir, remote_dir = tmp_path / "local", tmp_path / "remote"
    assert main(["run", str(write_yaml(in_process_scenario(), "local.yaml")), "--out", str(local_dir),
                 "--quiet"]) == 0
    server, service = served("reverse_sigmoid")
    with server as url:
        assert main(["run", str(write_yaml(remote_scenario(url), "remote.yaml")), "--out", str(remote_dir),
                     "--quiet"]) == 0
    local, remote = results(local_dir), results(remote_dir)
    key = ["kind", "attack", "budget", "seed", "metric"]
    # extraction: the served defence on the wire == the same defence in process
    ext_local = local[(local.kind == "extraction") & (local.defence == "reverse_sigmoid")].set_index(key)["value"]
    ext_remote = remote[remote.kind == "extraction"].set_index(key)["value"]
    assert len(ext_remote) > 0 and sorted(ext_remote.index) == sorted(ext_local.index)
    assert {"fidelity", "accuracy", "r_test", "r_unif", "kl", "queries_used"} <= set(ext_remote.index.get_level_values(
        "metric"))
    pd.testing.assert_series_equal(ext_remote.sort_index(), ext_local.sort_index(), check_exact=True)
    # utility: honest users on the evaluation key (undefended) == the in-process victim without defence
    util_local = local[(local.kind == "utility") & (local.defence == "none")].set_index(key)["value"]
    util_remote = remote[remote.kind == "utility"].set_index(key)["value"]
    pd.testing.assert_series_equal(util_remote.sort_index(), util_local.sort_index(), check_exact=True)

    # the attacker's queries, counted here and by the server, apart from the evaluation's
    all_rows = pd.read_csv(remote_dir / "results.csv")
    ext = all_rows[all_rows.kind == "extraction"].set_index(["attack", "budget", "metric"])["value"]
    for attack in ("knockoff:strategy=random", "copycat"):
        for b in (60, 120):
            assert ext[(attack, b, "server_queries_used")] == ext[(attack, b, "queries_used")] == b
    summary = json.loads((remote_dir / "summary.json").read_text())
    assert summary["victim"]["endpoint"]["parameters"]["defence"] == "reverse_sigmoid"
    usage = summary["remote_queries"]
    stats = service.stats()["clients"]
    assert usage["attacker"]["queries"] == 240 == stats["attacker"]["queries"]
    assert usage["attacker"]["server_queries_used"] == 240
    assert usage["evaluation"]["queries"] == stats["evaluation"]["queries"] > 0
    assert summary["victim_filled_in"]["nb_classes"] == 10
    assert summary["victim_filled_in"]["binary"] is True  # serve lists the binary tensor data extension


def test_proof_of_work_quota_and_keys_with_serve(served, monkeypatch):
    """A suspicious batch gets a 428 challenge bound to its inputs; the client solves it and resends them.
    A spent quota fails at once; a wrong key is named when the scenario is loaded."""
    import numpy as np

    from stealcheck.adapters.remote_victim import OIPClient, QuotaExhaustedError, complete_section
    from stealcheck.errors import ScenarioError

    server, service = served("pow", detectors=["msp"],
                             defences=["none", {"pow": {"detector": "msp", "target_fpr": 0.05, "min_bits": 4,
                                                        "max_bits": 6}}])
    x = np.random.default_rng(0).uniform(0, 1, size=(24, 1, 8, 8)).astype(np.float32)  # noise, not digits
    with server as url:
        attacker = OIPClient(url, "wire", ATTACK_KEY, nb_classes=10, max_batch=8, binary=True)
        answers = attacker.predict(x)
        small = OIPClient(url, "wire", SMALL_KEY, nb_classes=10, max_batch=8, retries=3)  # JSON
        with pytest.raises(QuotaExhaustedError, match="quota exceeded.*2 remaining"):
            small.predict(x)
        assert small.usage.queries == 8 and small.usage.retries == 0 and small.usage.quota_remaining == 2
        # loading checks the keys against the server, and spends nothing
        assert complete_section({"kind": "remote", "url": url, "model": "wire"})["input"]["shape"] == [1, 8, 8]
        monkeypatch.setenv("STEALCHECK_EVAL_KEY", "not-a-key-of-this-server")
        with pytest.raises(ScenarioError, match=r"refused the evaluation's key in \$STEALCHECK_EVAL_KEY \(403"):
            complete_section({"kind": "remote", "url": url, "model": "wire"})
    assert attacker.usage.pow_solved >= 1 and attacker.usage.queries == 24
    assert attacker.usage.requests == 3 + attacker.usage.pow_solved  # each challenge costs one more request
    assert answers.shape == (24, 10) and np.allclose(answers.sum(1), 1.0)
    np.testing.assert_array_equal(answers, service.model.oracle.predict(x))  # the bytes are the float64 answers
    stats = service.stats()["clients"]["attacker"]
    assert stats["queries"] == 24 and stats["answered"] == 24  # a 428 charges nothing; the solved batch counts once
    assert service.stats()["clients"]["evaluation"]["queries"] == 0  # the key checks were free
