"""Where cells run: in this process (``local``, the default) or on a Dask cluster (``dask``).

Both take the cells still to do (dependencies before dependants) and yield each :class:`CellResult`
as it finishes. A cell that raises is tried again up to ``retries`` times, then handed back with its
error, and the cells that depend on it are handed back failed without running; the rest of the grid
goes on. A ScenarioError (bad input) and an interruption are not retried: they end the run.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Callable, Iterator

from .cells import CellResult, RunContext, run_cell
from .errors import ScenarioError
from .plan import Cell

log = logging.getLogger("stealcheck")


def attempt(ctx: RunContext, cell: Cell, retries: int, failed_deps: list[str]) -> CellResult:
    """Run ``cell``, trying again after an error up to ``retries`` times; a failure is a result with ``error``."""
    if failed_deps:
        return CellResult(cell.name, cell.label, error=f"not run: it needs {', '.join(failed_deps)}, which failed")
    error = ""
    for n in range(retries + 1):
        try:
            return run_cell(ctx, cell)
        except ScenarioError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("%s failed (try %d of %d): %s", cell.label, n + 1, retries + 1, error,
                        exc_info=log.isEnabledFor(logging.DEBUG))
    return CellResult(cell.name, cell.label, error=error)


class LocalExecutor:
    """Every cell in this process, one after the other, in plan order."""

    def run(self, ctx: RunContext, cells: list[Cell], retries: int,
            on_start: Callable[[str], None] = lambda label: None) -> Iterator[CellResult]:
        failed: dict[str, str] = {}  # cell key -> name, of the cells that failed
        for cell in cells:
            on_start(cell.label)
            result = attempt(ctx, cell, retries, [failed[k] for k in cell.deps if k in failed])
            if result.error is not None:
                failed[cell.key] = cell.name
            yield result

    def close(self) -> None:
        """Nothing to release."""


class DaskExecutor:
    """Cells as tasks of a Dask cluster: a LocalCluster of ``workers`` processes (one thread each), or
    the cluster whose scheduler is at ``scheduler``. Cell dependencies are task dependencies.

    Workers read and write the cache named in the RunContext: on a cluster of several machines it
    must be shared storage (the same path on every worker).
    """

    #: Worker settings for a LocalCluster. A cell is mostly Python-level training steps holding the
    #: GIL; Dask's statistical profiler (a stack sample every 10 ms) and its 20 ms event-loop tick take
    #: the GIL from them: a cell ran 10% slower in a worker than in-process (37.1 s vs 40.9 s of cell
    #: time, benchmarks/scale.py's grid), and as fast with these off (36.4 s vs 36.8 s).
    WORKER_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        import dask
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler:  # an existing cluster runs with its own configuration
            self.client = Client(scheduler)
        else:
            with dask.config.set(self.WORKER_CONFIG):  # the nanny hands this configuration to its worker
                self.cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
            self.client = Client(self.cluster)

    def run(self, ctx: RunContext, cells: list[Cell], retries: int,
            on_start: Callable[[str], None] = lambda label: None) -> Iterator[CellResult]:
        from distributed import as_completed

        # One torch thread per worker (a worker is one core); no progress bars where nobody sees them.
        ctx = replace(ctx, progress=False, torch_threads=1)
        futures, cell_of = {}, {}
        for cell in cells:
            deps = [futures[k] for k in cell.deps if k in futures]
            future = self.client.submit(_remote, ctx, cell, retries, *deps, pure=False,
                                        key=f"{cell.label}-{uuid.uuid4().hex[:8]}")
            futures[cell.key], cell_of[future.key] = future, cell
        on_start(f"{len(cells)} cells on the cluster")
        for future in as_completed(list(futures.values())):
            cell = cell_of[future.key]
            try:
                result = future.result()
            except ScenarioError:
                raise
            except Exception as exc:  # the task itself could not run (e.g. its worker died)
                result = CellResult(cell.name, cell.label, error=f"{type(exc).__name__}: {exc}")
            for level, message in result.logs:  # what the worker logged, into run.log
                log.log(level, "%s", message)
            yield result

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _remote(ctx: RunContext, cell: Cell, retries: int, *deps: CellResult) -> CellResult:
    """A cell as a Dask task: ``deps`` are the results of the cells it needs (what orders the tasks)."""
    records = _Collect()
    log.addHandler(records)
    log.setLevel(logging.INFO)
    # the records go to the driver's run.log only, not through a root handler a library installed in the
    # worker (as runner.run_scenario does in the driver)
    propagated, log.propagate = log.propagate, False
    try:
        result = attempt(ctx, cell, retries, [d.name for d in deps if d.error is not None])
    finally:
        log.removeHandler(records)
        log.propagate = propagated
    result.logs = records.records
    return result


class _Collect(logging.Handler):
    """Keeps the log records a cell makes in a worker, so that the driver writes them to run.log."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def make_executor(kind: str, workers: int | None = None, scheduler: str | None = None):
    """The executor named ``kind``: 'local' or 'dask'."""
    if kind == "local":
        return LocalExecutor()
    if kind == "dask":
        return DaskExecutor(workers, scheduler)
    raise ScenarioError(f"unknown executor '{kind}': use local or dask.")
