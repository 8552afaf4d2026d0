"""A run that fails before its run folder exists says so, and shows what it logged (there is no
summary.json or run.log to point at); one that fails later points at them."""

from __future__ import annotations

import yaml

from conftest import tiny_scenario
from stealcheck import runner
from stealcheck.cli import main


def test_a_failure_before_the_run_folder_exists_is_reported_with_its_log(tmp_path, monkeypatch, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario()))

    def broken_world(ctx, built=None):
        runner.log.info("loading the victim's data")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner, "world", broken_world)
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 3
    err = capsys.readouterr().err
    assert "before its run folder was created (nothing was written): RuntimeError: disk on fire" in err
    assert "INFO loading the victim's data" in err
    assert "summary.json" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
