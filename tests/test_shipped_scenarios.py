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


@pytest.mark.parametrize("name", shipped_scenarios())
def test_shipped_scenario_validates(name, capsys):
    assert main(["validate", name]) == 0, capsys.readouterr().err
    scenario = load_scenario(resolve_scenario_path(name))
    assert scenario.name == name  # the run folder is named after it


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
