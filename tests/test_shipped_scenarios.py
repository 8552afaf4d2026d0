"""Every scenario shipped as package data validates, and the README's quickstart snippet matches it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stealcheck.cli import main, resolve_scenario_path, shipped_scenarios
from stealcheck.scenario import load_scenario

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_documented_scenarios_are_shipped():
    assert {"quickstart", "attacks_mnist"} <= set(shipped_scenarios())


@pytest.mark.parametrize("name", [n for n in shipped_scenarios() if n != "remote_quickstart"])
def test_shipped_scenario_validates(name, capsys):
    assert main(["validate", name]) == 0, capsys.readouterr().err
    scenario = load_scenario(resolve_scenario_path(name))
    assert scenario.name == name  # the run folder is named after it


def test_remote_quickstart_validates_against_a_served_quickstart(tmp_path, monkeypatch, capsys):
    """The README's endpoint demo: remote_quickstart against `stealcheck serve` of a model named quickstart
    with the quickstart's input (a small MLP stands in for the conv3, to keep the test fast)."""
    from conftest import tiny_scenario
    from stealcheck.scenario import build_scenario
    from stealcheck.serve import Client, KeyRing, background, build_service, hash_key

    stand_in = tiny_scenario(name="quickstart", victim={"kind": "torch", "architecture": "mlp",
                                                        "input": {"shape": [1, 28, 28]}, "train": {"steps": 30}},
                             data={"victim_train": {"source": "mnist5k", "split": "train"},
                                   "test": {"source": "mnist5k", "split": "test"}, "attacker": "digits"},
                             attacks=["copycat"], budgets=[10], seeds=[0])
    keys = [Client("auditor", hash_key("auditor-key-0123456789")),
            Client("evaluation", hash_key("evaluation-key-0123456789"), undefended=True)]
    service = build_service(build_scenario(stand_in), "none", keys=keys, audit_log=tmp_path / "audit.jsonl")
    monkeypatch.setenv("STEALCHECK_API_KEY", "auditor-key-0123456789")
    monkeypatch.setenv("STEALCHECK_EVAL_KEY", "evaluation-key-0123456789")
    with background(service) as url:
        monkeypatch.setenv("STEALCHECK_URL", url)
        assert main(["validate", "remote_quickstart"]) == 0, capsys.readouterr().err
    monkeypatch.setenv("STEALCHECK_URL", url)  # the server is gone now: validate says so
    assert main(["validate", "remote_quickstart"]) == 2
    assert url in capsys.readouterr().err
    assert KeyRing(keys).clients["auditor"].used == 0


def test_quickstart_has_a_gate_and_a_baseline():
    scenario = load_scenario(resolve_scenario_path("quickstart"))
    assert scenario.model.expect, "the README demo should show a gate"
    assert any(d.plugin == "none" for d in scenario.defences)


def test_readme_quickstart_snippet_matches_the_shipped_file():
    """The README annotates the quickstart; the sections it shows must be the real ones."""
    text = README.read_text()
    block = re.search(r"```yaml\n(name: quickstart.*?)```", text, re.S).group(1)
    shown = yaml.safe_load(block.replace("description: ...", "description: x"))
    real = yaml.safe_load(Path(resolve_scenario_path("quickstart")).read_text())
    for key in ("victim", "data", "thief", "defences", "attacks", "budgets", "seeds"):
        assert shown[key] == real[key], key
    assert [{k: g[k] for k in ("metric", "attack", "defence", "max")} for g in real["expect"]] == shown["expect"]
