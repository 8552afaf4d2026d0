"""The plan of a run: its cells, their dependencies and content addresses, and `stealcheck plan`."""

from __future__ import annotations

import contextlib
import io

import yaml
from conftest import tiny_scenario
from stealcheck.cli import main
from stealcheck.plan import plan
from stealcheck.scenario import build_scenario

DETECTING = dict(seeds=[0], budgets=[50], defences=["none", {"reject": {"detector": "msp"}}],
                 attacks=["copycat", "knockoff"], detectors=["msp"], detection={"budgets": [50]})


def test_plan_is_pure_and_ordered_dependencies_first():
    scenario = build_scenario(tiny_scenario(**DETECTING))
    cells = plan(scenario, "v")
    assert [c.key for c in cells] == [c.key for c in plan(scenario, "v")]  # the same scenario, the same plan
    assert len({c.key for c in cells}) == len(cells) and len({c.name for c in cells}) == len(cells)
    seen = set()
    for c in cells:
        assert set(c.deps) <= seen, c.name  # every dependency comes before its dependant
        seen.add(c.key)
    by_name = {c.name: c for c in cells}
    victim, detectors = by_name["victim"], by_name["detectors|||"]
    assert victim.deps == () and detectors.deps == (victim.key,)
    assert by_name["extraction|none|copycat|0"].deps == (victim.key,)
    # an active defence is driven by the detectors: its cells wait for them
    driven = [c for c in cells if c.defence.startswith("reject")]
    assert {c.kind for c in driven} == {"utility", "extraction"}
    assert all(c.deps == (victim.key, detectors.key) for c in driven)
    assert by_name["detection||knockoff|0"].deps == (victim.key, detectors.key)


def test_keys_change_with_what_determines_the_cell():
    base = {c.name: c.key for c in plan(build_scenario(tiny_scenario()), "v")}
    other_victim = tiny_scenario()
    other_victim["victim"]["train"] = {"steps": 151}
    changed = {c.name: c.key for c in plan(build_scenario(other_victim), "v")}
    assert all(changed[n] != base[n] for n in base)  # every cell downstream of the victim
    more_budgets = {c.name: c.key for c in plan(build_scenario(tiny_scenario(budgets=[50, 100, 150])), "v")}
    assert more_budgets["victim"] == base["victim"] and more_budgets["utility|none||"] == base["utility|none||"]
    assert more_budgets["extraction|none|copycat|0"] != base["extraction|none|copycat|0"]
    assert {c.name: c.key for c in plan(build_scenario(tiny_scenario()), "w")} != base  # another version


def test_plan_command_shows_cache_status_before_and_after_a_run(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario(seeds=[0], budgets=[50], defences=["none"], attacks=["copycat"],
                                                 output={"dir": str(tmp_path / "runs")}), sort_keys=False))

    def cli(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
        return code, out.getvalue()

    code, before = cli("plan", str(path))
    assert code == 0
    assert "3 cells: 0 cached, 3 to run" in before
    assert "copycat x none seed 0" in before and "needs: " not in before  # a table, dependencies by label
    assert cli("run", str(path), "--quiet", "--out", str(tmp_path / "run"))[0] == 0
    code, after = cli("plan", str(path))
    rows = {line.split()[0]: line for line in after.splitlines()[1:-1]}
    assert " cached " in rows["victim"] and " cached " in rows["extraction"]
    assert " to run " in rows["utility"]  # a utility cell measures latency: it always runs
    assert "3 cells: 2 cached, 1 to run" in after
