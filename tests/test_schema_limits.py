"""Numbers, names, folders and defence chains are checked by the schema, before anything runs.

Each case here passed `validate` once and then failed (or silently did the wrong thing) in `run`.
"""

from __future__ import annotations

import math

import pytest

from conftest import tiny_scenario
from stealcheck.cli import main
from stealcheck.errors import ScenarioError
from stealcheck.scenario import build_scenario, load_scenario


def _error(data: dict) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        build_scenario(data)
    return info.value


def _victim(**changes) -> dict:
    victim = tiny_scenario()["victim"]
    victim.update(changes)
    return victim


CASES = {
    "negative seed": (dict(seeds=[-1]), "seeds.0", "greater than or equal to 0"),
    "data_seed too large": (dict(data_seed=2**32), "data_seed", "less than 4294967296"),
    "negative data_seed": (dict(data_seed=-3), "data_seed", "greater than or equal to 0"),
    "boolean budget": (dict(budgets=[True, 750]), "budgets.0", "valid integer"),
    "float budget": (dict(budgets=[7.5]), "budgets.0", "valid integer"),
    "budget above the cap": (dict(budgets=[10**12]), "budgets.0", "less than or equal to"),
    "name too long": (dict(name="a" * 300), "name", "at most 100 characters"),
    "string seed": (dict(seeds=["1"]), "seeds.0", "valid integer"),
    "range with NaN": (dict(victim=_victim(input={"shape": [1, 8, 8], "range": [0, math.nan]})), "victim.input.range.1",
                       "finite number"),
    "range with inf": (dict(victim=_victim(input={"shape": [1, 8, 8], "range": [0, math.inf]})), "victim.input.range.1",
                       "finite number"),
    "huge input shape": (dict(victim=_victim(input={"shape": [1, 28, 10**40]})), "victim.input.shape",
                         "larger than stealcheck handles"),
    "thief lr inf": (dict(thief={"lr": math.inf}), "thief.lr", "finite number"),
    "NaN gate bound": (dict(expect=[{"metric": "fidelity", "max": math.nan}]), "expect.0.max", "finite number"),
    "reverse_sigmoid beta inf": (dict(defences=[{"reverse_sigmoid": {"beta": math.inf}}]), "defences.0.beta",
                                 "finite number"),
    "chain with an active defence": (
        dict(defences=["none", {"chain": {"steps": ["rounded", {"reject": {"detector": "fusion"}}]}}]),
        "defences.1.steps", "active defence driven by a detector"),
    "chain naming an unknown defence": (dict(defences=[{"chain": {"steps": ["rounded", "nope"]}}]),
                                        "defences.0.steps", "Unknown defence 'nope'"),
    "empty plugin module name": (dict(plugins=[""]), "plugins.0", "dotted Python module names"),
    "relative plugin module": (dict(plugins=[".relative"]), "plugins.0", "dotted Python module names"),
    "missing plugin module": (dict(plugins=["no_such_module_xyz"]), "plugins.0", "ModuleNotFoundError"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_schema_rejects(case):
    overrides, path, needle = CASES[case]
    err = _error(tiny_scenario(**overrides))
    assert err.path == path, (err.path, err.message)
    assert needle in err.message, err.message


def test_a_budget_that_cannot_fit_in_memory_is_refused(tmp_path):
    data = tiny_scenario(attacks=["equation_solving"], budgets=[10**9], data=None)
    data["victim"] = {"kind": "sklearn", "input": {"shape": [30]}}
    data["data"] = {"victim_train": {"source": "sklearn", "name": "breast_cancer", "split": "train"},
                    "test": {"source": "sklearn", "name": "breast_cancer", "split": "test"}}
    err = _error(data)
    assert err.path == "budgets"
    assert "holds all its queries in memory" in err.message and "GiB" in err.message


def test_cache_dir_that_is_a_file(tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    err = _error(tiny_scenario(output={"cache_dir": str(a_file / "sub")}))
    assert err.path == "output.cache_dir"
    assert "is a file" in err.message


def test_a_plugin_module_that_raises_at_import_is_a_clean_error(tmp_path, write_yaml, capsys):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    path = write_yaml(tiny_scenario(plugins=["broken_plugin"]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError: boom at import" in err and "plugins.0" in err and "Traceback" not in err


def test_a_plugin_module_beside_the_scenario_imports_by_name(tmp_path, write_yaml):
    (tmp_path / "my_scenario_plugins_mod.py").write_text(
        "from stealcheck.registry import defences\n"
        "@defences.register('my_identity_defence')\n"
        "class MyIdentity:\n"
        "    '''Answers unchanged (a user plugin for the test).'''\n"
        "    @staticmethod\n"
        "    def build(params, nb_classes):\n"
        "        return []\n")
    path = write_yaml(tiny_scenario(plugins=["my_scenario_plugins_mod"], defences=["my_identity_defence"]))
    scenario = load_scenario(path)
    assert [d.plugin for d in scenario.defences] == ["my_identity_defence"]
