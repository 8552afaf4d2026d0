"""The driver of a run: plan the cells, run the pre-run checks (the victim cell), hand the other cells
to an executor, and write what they return to the run folder (results.csv, the journal,
summary.json), then check the gates and write the report.

What a cell computes is in :mod:`.cells`, the plan in :mod:`.plan`, where cells run in
:mod:`.executors`.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from .cache import default_cache_dir
from .cells import CellResult, RunContext, World, run_cell, world
from .errors import RunFailedEarly, ScenarioError
from .executors import make_executor
from .gates import GateResult, evaluate_gate, write_junit
from .plan import plan, planned_cells
from .progress import CellProgress, TerminalWarnings, show_progress_bars
from .results import ResultsStore, RunSummary, read_results, read_summary
from .rundir import discard_run_dir, git_revision, package_versions, resolve_run_dir
from .scenario import Scenario, complete_scenario, interaction_deployment_ids

log = logging.getLogger("stealcheck")

__all__ = ["RunOutcome", "run_scenario", "planned_cells"]


@dataclass
class RunOutcome:
    """What the CLI needs after a run."""

    run_dir: Path
    status: str
    gates: list[GateResult] = field(default_factory=list)
    failed_cells: dict[str, str] = field(default_factory=dict)  # journal key -> error

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)


@dataclass(frozen=True)
class Execution:
    """How the cells run: the executor ('local' or 'dask') and its settings."""

    executor: str = "local"
    workers: int | None = None  # a LocalCluster of this many processes (dask)
    scheduler: str | None = None  # an existing cluster's scheduler address (dask)
    retries: int = 1  # tries after a cell's first failure


def run_scenario(scenario: Scenario, *, out_dir: str | Path | None = None, resume: bool = False,
                 quiet: bool = False, fresh: bool = False, execution: Execution = Execution()) -> RunOutcome:
    """Run ``scenario``; results, summary, log and report go to the run folder.

    Whatever can reject the user's input (reading the data sets, building or loading the victim,
    checking shapes and sizes) runs before the run folder is made, so invalid input leaves no
    half-made folder behind; what is logged meanwhile is held and written to run.log once the folder
    exists. A ScenarioError that can only come later (e.g. while fitting detectors) removes the new
    folder again, as long as no cell has finished. A resumed folder is never removed.
    """
    clock_start = time.monotonic()  # the session's wall time includes preparing the victim
    scenario = complete_scenario(scenario)  # a remote victim's metadata (done once: load_and_check did it)
    run_dir = resolve_run_dir(scenario, out_dir, resume)
    held = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)  # flushed by hand
    log.addHandler(held)
    log.setLevel(logging.INFO)
    # The run's own handlers say where its records go: a library that configures the root logger at import
    # (Opacus calls logging.basicConfig) must not echo every INFO line of run.log onto the terminal.
    propagated, log.propagate = log.propagate, False
    terminal = TerminalWarnings()
    log.addHandler(terminal)
    # Libraries' warnings (e.g. scikit-learn's ConvergenceWarning) go to run.log, not the terminal.
    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    py_warnings.propagate = False
    py_warnings.addHandler(held)
    handler: logging.Handler | None = None
    made: list[Path] | None = None  # the folders this session made, once it made the run folder
    try:
        if "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(max(1, os.cpu_count() or 1))
        ctx = RunContext(scenario.as_written, scenario.source_path,
                         str(scenario.model.output.cache_dir or default_cache_dir()),
                         package_versions()["stealcheck"], fresh=fresh, progress=show_progress_bars(quiet))
        world(ctx, World(ctx, scenario, retrain=fresh))  # the pre-run checks: data, victim, shapes
        made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        held.setTarget(handler)
        held.flush()
        log.removeHandler(held)
        py_warnings.removeHandler(held)
        log.addHandler(handler)
        py_warnings.addHandler(handler)
        return _run(scenario, ctx, run_dir, resume, quiet, clock_start, execution)
    except ScenarioError:
        if made is not None and not resume and not ResultsStore(run_dir).done_cells():
            _close_log(held, handler)  # run.log is open inside the folder
            discard_run_dir(run_dir, made)
        raise
    except Exception as exc:
        if made is None:  # no run folder yet: what was logged would be lost with the held handler
            tail = [logging.Formatter("%(levelname)s %(message)s").format(r) for r in held.buffer[-20:]]
            raise RunFailedEarly(exc, tail) from exc
        raise
    finally:
        _close_log(held, handler, terminal)
        log.propagate = propagated
        logging.captureWarnings(False)


def _close_log(*handlers: logging.Handler | None) -> None:
    for h in handlers:
        if h is not None:
            log.removeHandler(h)
            logging.getLogger("py.warnings").removeHandler(h)
            h.close()


def _run(scenario: Scenario, ctx: RunContext, run_dir: Path, resume: bool, quiet: bool, clock_start: float,
         execution: Execution) -> RunOutcome:
    import torch

    m = scenario.model
    store = ResultsStore(run_dir)
    previous = read_summary(run_dir) if resume else {}
    done = store.open_for_resume() if resume else set()
    if not resume:
        store.reset()
        if scenario.source_path:
            shutil.copyfile(scenario.source_path, run_dir / "scenario.yaml")
    (run_dir / "scenario.resolved.yaml").write_text(yaml.safe_dump(scenario.resolved_dict(), sort_keys=False))
    summary = RunSummary(run_dir, {
        "stealcheck_version": ctx.version,
        "scenario_name": scenario.name,
        "title": m.output.title or scenario.name,
        "description": m.description,
        "scenario_file": scenario.source_path,
        "status": "running",
        "error": None,
        "started_at": previous.get("started_at") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished_at": None,
        "wall_seconds": None,
        "resumed": bool(resume),
        "seeds": m.seeds,
        "budgets": m.budgets,
        "attack_budgets": {a.id: scenario.budgets_of(a) for a in scenario.attacks},
        "data_seed": m.data_seed,
        "scenario_as_written": scenario.written_by_user,
        "victim_filled_in": scenario.filled_in,  # what a remote endpoint's metadata filled in (kind: remote)
        "scenario_resolved": scenario.resolved_dict(),
        "attacks": {a.id: a.plugin for a in scenario.attacks},
        "defences": {d.id: d.plugin for d in scenario.defences},
        "packages": package_versions(),
        "git_revision": git_revision(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                     "torch_threads": torch.get_num_threads()},
        "executor": {"kind": execution.executor, "workers": execution.workers, "scheduler": execution.scheduler},
        "run_dir": str(run_dir),
        "gates": [],
        "cells": {},
    }, previous=previous, clock_start=clock_start)
    # What restored cells put in the summary (the detectors' own reports) stays.
    summary.update({k: previous[k] for k in ("detectors", "detection", "ownership_models", "interaction_models",
                                             "interactions") if k in previous})
    summary.save()
    outcome = RunOutcome(run_dir, "running")
    try:
        outcome.failed_cells = _execute(scenario, ctx, store, done, summary, quiet, execution)
        summary["status"] = "partial" if outcome.failed_cells else "complete"
        if outcome.failed_cells:
            summary["error"] = f"{len(outcome.failed_cells)} cell(s) failed (resume with --resume to retry them)"
    except KeyboardInterrupt:
        summary["status"] = "partial"
        summary["error"] = "interrupted by the user (resume with --resume)"
        log.warning("interrupted")
    except ScenarioError:
        summary["status"] = "failed"
        summary["error"] = str(sys.exc_info()[1])
        raise
    except Exception as exc:  # recorded in the summary, then re-raised for the CLI
        summary["status"] = "failed"
        summary["error"] = f"{type(exc).__name__}: {exc}"
        log.exception("run failed")
        raise
    finally:
        summary["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        frame = read_results(run_dir)
        named = {**summary["defences"], **{d.id: d.plugin for d in scenario.detectors},
                 **({d: d for d in interaction_deployment_ids(m.interactions, scenario.interactions)}
                    if scenario.interactions else {})}
        gates = [evaluate_gate(g, frame, summary["attacks"], named,
                               {a.id: scenario.budgets_of(a) for a in scenario.attacks},
                               {o.id: o.plugin for o in scenario.ownership}) for g in m.expect]
        summary["gates"] = [g.to_dict() for g in gates]
        summary.save()
        if m.expect:
            write_junit(gates, run_dir / "junit.xml", scenario.name)
        outcome.gates = gates
        outcome.status = summary["status"]
        try:
            from stealcheck.reports import build_report

            build_report(run_dir)
        except Exception:  # the report must never hide the run's own outcome
            log.exception("could not build the report")
    return outcome


def _execute(scenario: Scenario, ctx: RunContext, store: ResultsStore, done: set[str], summary: RunSummary,
             quiet: bool, execution: Execution) -> dict[str, str]:
    """Run the cells not yet done and record each as it finishes; return the failed ones' errors."""
    cells = plan(scenario, ctx.version)
    victim, todo = cells[0], [c for c in cells if c.journalled and c.name not in done]
    summary.update(run_cell(ctx, victim).summary)  # built by the pre-run checks: this records it
    progress = CellProgress([c.name for c in cells if c.journalled], done, summary, quiet)
    summary.save()
    failed: dict[str, str] = {}
    executor = make_executor(execution.executor, execution.workers, execution.scheduler)
    try:
        for result in executor.run(ctx, todo, execution.retries, on_start=progress.start):
            if result.error is not None:
                failed[result.name] = summary.setdefault("failed_cells", {})[result.name] = result.error
                log.error("%s failed: %s", result.label, result.error)
            else:
                _record(result, store, summary)
            progress.finish(result)
            summary.save()
    finally:
        executor.close()
        progress.close()
    return failed


#: summary.json entries that several cells add to (one key each), rather than replace
MERGED_SUMMARY_KEYS = ("interaction_models",)


def _record(result: CellResult, store: ResultsStore, summary: RunSummary) -> None:
    """A finished cell's rows, files and summary entries into the run folder; then its journal line."""
    store.append(result.rows)
    for path, arrays in result.arrays.items():
        (store.run_dir / path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(store.run_dir / path, **arrays)
    for path, text in result.files.items():
        (store.run_dir / path).write_text(text)
    merged = {k: {**(summary.get(k) or {}), **v} for k, v in result.summary.items() if k in MERGED_SUMMARY_KEYS}
    summary.update({**result.summary, **merged})
    store.finish_cell(result.name)
