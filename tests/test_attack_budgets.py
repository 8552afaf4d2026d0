"""Attacks with budgets of their own (long form ``budgets:``): schema, pool checks, runs, gates."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import tiny_scenario
from stealcheck.cli import main
from stealcheck.errors import ScenarioError
from stealcheck.results import read_results, read_summary
from stealcheck.scenario import build_scenario


def _with_attacks(*attacks, **overrides):
    return tiny_scenario(attacks=list(attacks), **overrides)


def test_long_form_budgets_are_the_attacks_own_checkpoints():
    sc = build_scenario(_with_attacks({"plugin": "copycat", "id": "cc", "budgets": [60, 30]}, "knockoff"))
    cc, ko = sc.attacks
    assert sc.budgets_of(cc) == [30, 60]  # sorted
    assert sc.budgets_of(ko) == [50, 100]  # the scenario's
    assert sc.resolved_dict()["attacks"][0]["budgets"] == [30, 60]
    assert "budgets" not in sc.resolved_dict()["attacks"][1]


@pytest.mark.parametrize("budgets, message, path", [
    ([0, 10], "greater than 0", "attacks.0.budgets.0"),
    ([10, 10], "distinct", "attacks.0.budgets"),
    (["ten"], "valid integer", "attacks.0.budgets.0"),
    ([True, 10], "valid integer", "attacks.0.budgets.0"),
])
def test_bad_attack_budgets_are_rejected(budgets, message, path):
    with pytest.raises(ScenarioError, match=message) as err:
        build_scenario(_with_attacks({"plugin": "copycat", "budgets": budgets}))
    assert err.value.path == path


def test_budgets_key_is_only_for_attacks():
    with pytest.raises(ScenarioError, match="unknown key 'budgets'"):
        build_scenario(tiny_scenario(defences=[{"plugin": "none", "budgets": [5]}]))


def test_pool_size_is_checked_against_each_attacks_largest_budget():
    # digits holds 1,797 samples: fine for the scenario's budgets, not for this attack's own.
    with pytest.raises(ScenarioError, match="largest budget of attack 'cc' \\(5000\\)") as err:
        build_scenario(_with_attacks({"plugin": "copycat", "id": "cc", "budgets": [5000]}, "knockoff"))
    assert err.value.path == "attacks.0.budgets"


def test_a_gate_budget_must_be_a_checkpoint_of_the_attacks_it_selects():
    attacks = ({"plugin": "copycat", "id": "cc", "budgets": [30, 60]}, "knockoff")
    build_scenario(_with_attacks(*attacks, expect=[{"metric": "fidelity", "attack": "cc", "budget": 30, "min": 0}]))
    with pytest.raises(ScenarioError, match="not a checkpoint"):
        build_scenario(_with_attacks(*attacks, expect=[{"metric": "fidelity", "attack": "cc", "budget": 50,
                                                        "min": 0}]))


def test_run_with_per_attack_budgets(tmp_path, write_yaml, capsys):
    scenario = _with_attacks(
        {"plugin": "copycat", "id": "cc", "budgets": [30, 60]}, {"knockoff": {"strategy": "random"}},
        seeds=[0], defences=["none"],
        expect=[{"metric": "queries_used", "min": 60, "max": 100, "name": "each attack at its largest budget"}])
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(scenario)), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    frame = read_results(out)
    used = frame[frame["metric"] == "queries_used"]
    got = {a: sorted(pd.to_numeric(g["budget"]).astype(int)) for a, g in used.groupby("attack")}
    assert got == {"cc": [30, 60], "knockoff:strategy=random": [50, 100]}
    assert (pd.to_numeric(used["budget"]) == used["value"]).all()  # exact budgets, per attack
    summary = read_summary(out)
    (gate,) = summary["gates"]
    assert gate["passed"] and {o["budget"] for o in gate["observed"]} == {60, 100}
    assert summary["attack_budgets"] == {"cc": [30, 60], "knockoff:strategy=random": [50, 100]}
    html = (out / "report.html").read_text()
    assert "each attack&#39;s largest budget" in html or "each attack's largest budget" in html
