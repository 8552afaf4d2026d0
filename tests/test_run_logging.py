"""A run's records go to run.log (and warnings to the terminal), never through a handler that a library put
on the root logger: Opacus calls logging.basicConfig when it is imported, and the interactions runs used to
echo every INFO line of run.log onto the terminal."""

from __future__ import annotations

import io
import logging

from conftest import tiny_scenario
from stealcheck.runner import run_scenario
from stealcheck.scenario import build_scenario


def test_run_records_do_not_reach_a_root_handler(tmp_path):
    stream = io.StringIO()
    root_handler = logging.StreamHandler(stream)  # what logging.basicConfig(stream=...) installs
    root = logging.getLogger()
    root.addHandler(root_handler)
    stealcheck_log = logging.getLogger("stealcheck")
    before = stealcheck_log.propagate
    try:
        outcome = run_scenario(build_scenario(tiny_scenario(seeds=[0])), out_dir=tmp_path / "run", quiet=True)
    finally:
        root.removeHandler(root_handler)
    assert outcome.status == "complete"
    run_log = (tmp_path / "run" / "run.log").read_text()
    assert "fidelity" in run_log  # the records were written, to the run's own log
    assert stream.getvalue() == ""
    assert stealcheck_log.propagate == before  # restored for code outside the run
