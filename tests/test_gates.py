"""Expectation gates on results frames, and their JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from stealcheck.gates import evaluate_gate, format_gate_table, write_junit
from stealcheck.results import COLUMNS, ResultsStore, read_results
from stealcheck.scenario import Gate

ATTACKS = {"knockoff:strategy=random": "knockoff", "copycat": "copycat"}
DEFENCES = {"none": "none", "label_only": "label_only"}
BUDGETS = [50, 100]

# fidelity per (attack, defence, budget): values for seeds 0 and 1
FIDELITY = {
    ("knockoff:strategy=random", "none", 50): (0.2, 0.3),
    ("knockoff:strategy=random", "none", 100): (0.6, 0.8),
    ("copycat", "none", 50): (0.1, 0.1),
    ("copycat", "none", 100): (0.4, 0.5),
    ("knockoff:strategy=random", "label_only", 100): (0.3, 0.3),
    ("copycat", "label_only", 100): (0.35, 0.45),
}


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    """A results.csv written and read back the way a run does (utility rows have no budget/seed)."""
    store = ResultsStore(tmp_path)
    rows = []
    for (attack, defence, budget), values in FIDELITY.items():
        for seed, value in enumerate(values):
            rows.append({"kind": "extraction", "victim": "v", "defence": defence, "attack": attack,
                         "budget": budget, "seed": seed, "metric": "fidelity", "value": value})
    for defence, acc in (("none", 0.9), ("label_only", 0.9)):
        rows.append({"kind": "utility", "victim": "v", "defence": defence, "attack": "", "budget": "",
                     "seed": "", "metric": "victim_accuracy", "value": acc})
    rows.append({"kind": "utility", "victim": "v", "defence": "label_only", "attack": "", "budget": "",
                 "seed": "", "metric": "output_distortion", "value": 0.6})
    store.append(rows)
    out = read_results(tmp_path)
    assert list(out.columns) == COLUMNS
    return out


def _eval(frame, **gate):
    return evaluate_gate(Gate(**gate), frame, ATTACKS, DEFENCES, BUDGETS)


def test_gate_passes_on_mean_over_seeds_at_the_largest_budget(frame):
    # knockoff vs none @100: seeds 0.6 and 0.8 -> mean 0.7; min 0.65 fails for the worst seed, max 0.75 for the best
    r = _eval(frame, metric="fidelity", attack="knockoff:strategy=random", defence="none", min=0.65, max=0.75)
    assert r.passed
    assert r.observed == [{"defence": "none", "attack": "knockoff:strategy=random", "budget": 100,
                           "value": pytest.approx(0.7)}]


def test_gate_fails_when_a_matching_cell_is_out_of_bounds(frame):
    r = _eval(frame, metric="fidelity", defence="none", min=0.5)
    # copycat vs none @100 has mean 0.45
    assert not r.passed
    assert "copycat" in r.detail and "0.45" in r.detail
    assert {o["attack"] for o in r.observed} == {"knockoff:strategy=random", "copycat"}


def test_gate_max_bound(frame):
    assert _eval(frame, metric="fidelity", defence="label_only", max=0.4).passed  # means 0.3 and 0.4
    assert not _eval(frame, metric="fidelity", defence="label_only", max=0.35).passed


def test_gate_at_an_explicit_budget(frame):
    r = _eval(frame, metric="fidelity", attack="knockoff:strategy=random", defence="none", budget=50, min=0.5)
    assert not r.passed
    assert r.observed[0]["budget"] == 50 and r.observed[0]["value"] == pytest.approx(0.25)


def test_gate_with_no_matching_rows_fails(frame):
    r = _eval(frame, metric="kl", min=0.0)
    assert not r.passed and r.observed == []
    assert "no results" in r.detail
    # a defence with no extraction rows at budget 50 also matches nothing
    assert not _eval(frame, metric="fidelity", defence="label_only", budget=50, min=0.0).passed


def test_gate_matches_attack_by_plugin_name_or_id(frame):
    by_plugin = _eval(frame, metric="fidelity", attack="knockoff", defence="none", min=0.0)
    by_id = _eval(frame, metric="fidelity", attack="knockoff:strategy=random", defence="none", min=0.0)
    assert by_plugin.observed == by_id.observed
    assert [o["attack"] for o in by_plugin.observed] == ["knockoff:strategy=random"]
    only_copycat = _eval(frame, metric="fidelity", attack="copycat", min=0.0)
    assert {o["attack"] for o in only_copycat.observed} == {"copycat"}
    assert {o["defence"] for o in only_copycat.observed} == {"none", "label_only"}


def test_an_id_wins_over_a_plugin_of_the_same_name(tmp_path):
    # Two jbda entries: the one whose id is the plugin's name, and an adaptive sibling. A gate on
    # "jbda" checks the entry with that id only; a plugin name no entry carries as id selects all.
    store = ResultsStore(tmp_path)
    rows = [{"kind": "extraction", "victim": "v", "defence": "none", "attack": attack, "budget": 100,
             "seed": 0, "metric": "fidelity", "value": value}
            for attack, value in (("jbda", 0.9), ("jbda_small_step", 0.2), ("copy2", 0.5))]
    store.append(rows)
    frame = read_results(tmp_path)
    plugins = {"jbda": "jbda", "jbda_small_step": "jbda", "copy2": "copycat"}
    by_id = evaluate_gate(Gate(metric="fidelity", attack="jbda", min=0.8), frame, plugins, DEFENCES, BUDGETS)
    assert by_id.passed and [o["attack"] for o in by_id.observed] == ["jbda"]
    by_plugin = evaluate_gate(Gate(metric="fidelity", attack="copycat", min=0.0), frame, plugins, DEFENCES, BUDGETS)
    assert [o["attack"] for o in by_plugin.observed] == ["copy2"]


def test_utility_gate_ignores_budget(frame):
    r = _eval(frame, metric="victim_accuracy", defence="label_only", min=0.85)
    assert r.passed and len(r.observed) == 1 and r.observed[0]["value"] == pytest.approx(0.9)
    assert r.observed[0]["budget"] is None and r.observed[0]["attack"] is None
    assert not _eval(frame, metric="output_distortion", max=0.5).passed


def test_non_finite_value_fails(frame):
    bad = frame.copy()
    bad.loc[(bad["metric"] == "fidelity") & (bad["attack"] == "copycat"), "value"] = float("nan")
    assert not _eval(bad, metric="fidelity", attack="copycat", defence="none", min=0.0).passed


def test_gate_labels():
    assert Gate(metric="fidelity", min=0.5, name="my gate").label() == "my gate"
    label = Gate(metric="fidelity", attack="copycat", min=0.5).label()
    assert "fidelity" in label and "attack=copycat" in label and ">= 0.5" in label


@pytest.mark.parametrize("bounds", [{}, {"min": 0.9, "max": 0.1}])
def test_gate_bounds_are_validated(bounds):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Gate(metric="fidelity", **bounds)


def test_write_junit(frame, tmp_path):
    results = [
        _eval(frame, metric="fidelity", attack="knockoff", defence="none", min=0.65, name="knockoff copies"),
        _eval(frame, metric="fidelity", defence="none", min=0.5, name='copycat <fails> & "quotes"'),
        _eval(frame, metric="kl", min=0.0, name="nothing matches"),
    ]
    path = tmp_path / "junit.xml"
    write_junit(results, path, "tiny")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuite"
    assert root.get("tests") == "3" and root.get("failures") == "2"
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == ["knockoff copies", 'copycat <fails> & "quotes"', "nothing matches"]
    assert cases[0].find("failure") is None
    for case, result in zip(cases[1:], results[1:]):
        failure = case.find("failure")
        assert failure is not None
        assert failure.get("message") == result.detail
    table = format_gate_table(results)
    assert table.count("FAIL") == 2 and table.count("PASS") == 1


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_utility_gate_does_not_rely_on_deprecated_pandas_behaviour(frame):
    assert _eval(frame, metric="victim_accuracy", defence="none", min=0.5).passed
