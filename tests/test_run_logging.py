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


def test_a_dask_cell_keeps_its_records_for_the_driver_only(monkeypatch):
    """In a Dask worker a cell's records are collected for the driver's run.log, and do not reach a root
    handler either (a worker that imported Opacus has one)."""
    from stealcheck import executors
    from stealcheck.cells import CellResult

    def attempt(ctx, cell, retries, failed):
        logging.getLogger("stealcheck").info("cell says hello")
        return CellResult(name="cell", label="cell")

    monkeypatch.setattr(executors, "attempt", attempt)
    stream = io.StringIO()
    root_handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(root_handler)
    try:
        result = executors._remote(None, None, 0)
    finally:
        root.removeHandler(root_handler)
    assert result.logs == [(logging.INFO, "cell says hello")]
    assert stream.getvalue() == ""
    assert logging.getLogger("stealcheck").propagate is True
