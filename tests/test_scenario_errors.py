"""Scenario validation: every error names the file, the line (when known) and the key path,
and the CLI turns it into exit code 2 with the message on stderr, without a traceback."""

from __future__ import annotations

import pytest
import yaml

from conftest import line_of, tiny_scenario
from stealcheck.cli import main
from stealcheck.errors import ScenarioError
from stealcheck.scenario import load_scenario


def _text(**overrides) -> str:
    return yaml.safe_dump(tiny_scenario(**overrides), sort_keys=False)


def _error(path) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value


def _cli_error(path, capsys) -> str:
    capsys.readouterr()
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "Traceback" not in out.out
    assert out.err.startswith("stealcheck: error: ")
    return out.err


# Each case: YAML text, the substrings the message must contain, the key path, and the text
# whose line the error must point at (None: no line expected).
def _cases():
    cases = {}

    t = _text(attacks=[{"knockof": {"strategy": "random"}}])
    cases["unknown attack plugin"] = (t, ["Unknown attack 'knockof'", "Did you mean 'knockoff'?"], "attacks.0",
                                      "knockof")

    t = _text() + "budget: [10]\n"
    cases["unknown section"] = (t, ["unknown section 'budget'", "Did you mean 'budgets'?"], "budget", "budget:")

    t = _text(attacks=["copycat"]).replace("- copycat\n", "- {knockoff: {stratgy: random}}\n")
    cases["unknown plugin param"] = (t, ["unknown key 'stratgy'", "Did you mean 'strategy'?", "knockoff"],
                                     "attacks.0.stratgy", "stratgy")

    victim = dict(tiny_scenario()["victim"], architecure="mlp")
    t = _text(victim=victim)
    cases["unknown victim key"] = (t, ["unknown key 'architecure'", "Did you mean 'architecture'?"],
                                   "victim.architecure", "architecure")

    data = tiny_scenario()["data"]
    data["test"] = {"source": "digits", "splitt": "test"}
    t = _text(data=data)
    cases["unknown data key"] = (t, ["unknown key 'splitt'", "Did you mean 'split'?"], "data.test.splitt", "splitt")

    t = _text(budgets=["abc"])
    cases["bad type"] = (t, ["valid integer", "'abc'"], "budgets.0", "abc")

    t = _text(budgets=[-5, 100])
    cases["negative budget"] = (t, ["greater than 0", "-5"], "budgets.0", "- -5")

    t = _text(victim=dict(tiny_scenario()["victim"], output="label"))
    cases["label output vs knockoff probabilities"] = (
        t, ["needs probability outputs", "'label'", "use_probability"], "attacks.0", "knockoff")

    t = _text(budgets=[100, 2000])
    cases["pool too small"] = (t, ["1797", "2000", "digits"], "budgets", "budgets:")

    data = tiny_scenario()["data"]
    data["attacker"] = {"source": "digits", "split": "train"}
    t = _text(data=data, budgets=[1500])
    cases["pool split too small"] = (t, ["1437", "1500"], "budgets", "budgets:")

    t = _text(expect=[{"metric": "fidelty", "min": 0.5}])
    cases["gate unknown metric"] = (t, ["unknown metric 'fidelty'", "Did you mean 'fidelity'?"], "expect.0.metric",
                                    "fidelty")

    t = _text(expect=[{"metric": "fidelity", "attack": "copycta", "min": 0.5}])
    cases["gate unknown attack"] = (t, ["no attack 'copycta'", "Did you mean 'copycat'?"], "expect.0.attack",
                                    "copycta")

    t = _text(expect=[{"metric": "fidelity", "defence": "rounded", "min": 0.5}])
    cases["gate unknown defence"] = (t, ["no defence 'rounded'"], "expect.0.defence", "defence: rounded")

    t = _text(expect=[{"metric": "fidelity", "budget": 75, "min": 0.5}])
    cases["gate budget not a checkpoint"] = (t, ["75", "[50, 100]"], "expect.0.budget", "budget: 75")

    t = _text(defences=["none", "lable_only"])
    cases["unknown defence"] = (t, ["Unknown defence 'lable_only'", "Did you mean 'label_only'?"], "defences.1",
                                "lable_only")

    data = tiny_scenario()["data"]
    del data["attacker"]
    t = _text(data=data)
    cases["missing attacker data"] = (t, ["samples the attacker's pool, so data.attacker is required"], "data", "data:")
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_load_scenario_error_names_file_line_and_path(case, write_yaml):
    text, needles, key_path, line_needle = CASES[case]
    path = write_yaml(text)
    err = _error(path)
    for needle in needles:
        assert needle in err.message, (needle, err.message)
    assert err.path == key_path
    assert err.where == f"{path}:{line_of(text, line_needle)}"
    # The formatted message puts it all together: file:line at 'path': message
    assert str(err) == f"{path}:{line_of(text, line_needle)} at '{key_path}': {err.message}"


@pytest.mark.parametrize("case", ["unknown attack plugin", "unknown section", "unknown plugin param", "bad type",
                                  "negative budget", "label output vs knockoff probabilities", "pool too small",
                                  "gate unknown metric", "gate unknown attack"])
def test_cli_validate_reports_error_with_exit_code_2(case, write_yaml, capsys):
    text, needles, key_path, line_needle = CASES[case]
    path = write_yaml(text)
    err = _cli_error(path, capsys)
    assert f"{path}:{line_of(text, line_needle)}" in err
    assert f"'{key_path}'" in err
    for needle in needles:
        assert needle in err


def test_valid_tiny_scenario_passes_validation(write_yaml, capsys):
    path = write_yaml(tiny_scenario())
    scenario = load_scenario(path)
    assert [a.plugin for a in scenario.attacks] == ["knockoff", "copycat"]
    assert [a.id for a in scenario.attacks] == ["knockoff:strategy=random", "copycat"]
    assert scenario.model.budgets == [50, 100]
    assert main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_label_output_with_label_attacks_is_valid(write_yaml):
    """Label-only APIs are fine for attacks that train on labels (copycat, knockoff use_probability false)."""
    data = tiny_scenario(victim=dict(tiny_scenario()["victim"], output="label"),
                         attacks=["copycat", {"knockoff": {"use_probability": False}}])
    scenario = load_scenario(write_yaml(data))
    assert scenario.victim.output == "label"


def test_top_k_output_serves_partial_probabilities_to_knockoff(write_yaml):
    data = tiny_scenario(victim=dict(tiny_scenario()["victim"], output="top_k", top_k=3))
    scenario = load_scenario(write_yaml(data))
    assert (scenario.victim.output, scenario.victim.top_k) == ("top_k", 3)


@pytest.mark.parametrize("top_k", [0, -1, "two", True])
def test_bad_top_k(top_k, write_yaml):
    err = _error(write_yaml(tiny_scenario(victim=dict(tiny_scenario()["victim"], output="top_k", top_k=top_k))))
    assert err.path == "victim.top_k" and "positive integer" in err.message


def test_unknown_output_mode(write_yaml):
    err = _error(write_yaml(tiny_scenario(victim=dict(tiny_scenario()["victim"], output="labels"))))
    assert err.path == "victim.output" and "Did you mean 'label'?" in err.message


def test_budget_equal_to_pool_size_is_valid(write_yaml):
    scenario = load_scenario(write_yaml(tiny_scenario(budgets=[1797])))
    assert scenario.model.budgets == [1797]


def test_budgets_are_sorted(write_yaml):
    assert load_scenario(write_yaml(tiny_scenario(budgets=[100, 50]))).model.budgets == [50, 100]


def test_duplicate_yaml_key_names_key_and_both_lines(write_yaml, capsys):
    text = _text() + "name: other\n"
    path = write_yaml(text)
    err = _error(path)
    assert "duplicate key 'name'" in err.message
    assert "line 1" in err.message  # where it was first defined
    assert err.where == f"{path}:{line_of(text, 'name: other')}"
    cli = _cli_error(path, capsys)
    assert f"{path}:{line_of(text, 'name: other')}" in cli and "duplicate key 'name'" in cli


def test_duplicate_key_in_nested_mapping(write_yaml):
    text = _text().replace("  architecture: mlp\n", "  architecture: mlp\n  architecture: conv3\n", 1)
    path = write_yaml(text)
    err = _error(path)
    assert "duplicate key 'architecture'" in err.message
    assert err.where == f"{path}:{line_of(text, 'architecture: conv3')}"


def test_missing_file(tmp_path, capsys):
    path = tmp_path / "nope.yaml"
    err = _error(path)
    assert "file not found" in err.message and str(path) in str(err)
    cli = _cli_error(path, capsys)
    assert "file not found" in cli and "nope.yaml" in cli


def test_directory_instead_of_file(tmp_path):
    err = _error(tmp_path)
    assert "directory" in err.message


@pytest.mark.parametrize("bad_line", ["seeds: [0, 1]]", "  output: : label", "victim: a: b"])
def test_yaml_syntax_error_has_line_number(bad_line, write_yaml, capsys):
    lines = ["name: tiny", "budgets: [50, 100]", bad_line, "attacks: [copycat]", "description: x"]
    text = "\n".join(lines) + "\n"
    path = write_yaml(text)
    err = _error(path)
    assert "invalid YAML" in err.message
    assert err.where == f"{path}:3"
    cli = _cli_error(path, capsys)
    assert f"{path}:3" in cli


def test_scenario_must_be_a_mapping(write_yaml):
    err = _error(write_yaml("- just\n- a list\n"))
    assert "mapping" in err.message


def test_duplicate_attack_ids_are_refused(write_yaml):
    err = _error(write_yaml(tiny_scenario(attacks=["copycat", "copycat"])))
    assert "copycat" in err.message and "id" in err.message
    assert err.path == "attacks.1"


def test_long_form_gives_distinct_ids(write_yaml):
    scenario = load_scenario(write_yaml(tiny_scenario(attacks=[
        "copycat", {"plugin": "copycat", "id": "copycat-probs", "params": {"use_probability": True}}])))
    assert [a.id for a in scenario.attacks] == ["copycat", "copycat-probs"]
    assert scenario.attacks[1].params.use_probability is True


def test_thief_min_steps_above_max_steps(write_yaml):
    err = _error(write_yaml(tiny_scenario(thief={"min_steps": 50, "max_steps": 10})))
    assert "min_steps" in err.message and err.path.startswith("thief")


def test_victim_train_required_when_victim_is_trained(write_yaml):
    data = tiny_scenario()["data"]
    del data["victim_train"]
    err = _error(write_yaml(tiny_scenario(data=data)))
    assert "victim_train" in err.message


def test_adaptive_knockoff_needs_labelled_pool(write_yaml):
    data = tiny_scenario()["data"]
    data["attacker"] = {"source": "uniform", "size": 500}
    err = _error(write_yaml(tiny_scenario(data=data, attacks=[{"knockoff": {"strategy": "adaptive"}}])))
    assert "labelled" in err.message and err.path == "attacks.0"


def test_unknown_plugin_param_in_block_style_points_at_its_own_line(write_yaml):
    text = _text().replace("- knockoff:\n    strategy: random\n", "- knockoff:\n    stratgy: random\n")
    assert "stratgy" in text
    path = write_yaml(text)
    err = _error(path)
    assert "unknown key 'stratgy'" in err.message
    assert err.where == f"{path}:{line_of(text, 'stratgy')}"
