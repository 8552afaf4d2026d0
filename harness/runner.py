"""Runs a validated scenario: builds the victim, serves it through each defence, runs each
attack at every budget checkpoint and seed, streams results to the run folder, then checks
the gates and writes the report."""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from . import registry
from .attacks.base import AttackContext
from .cache import Cache, fingerprint
from .datasets import DataContext, Dataset
from .errors import ScenarioError
from .gates import GateResult, evaluate_gate, write_junit
from .metrics import ExtractionEval, UtilityEval
from .oracle import ClientRecord, Oracle
from .results import ResultsStore, RunSummary, cell_key, read_results, read_summary
from .scenario import Scenario, uses_pool
from .thief import make_thief
from . import detection_track as dt
from .victim import Victim, VictimContext

log = logging.getLogger("stealcheck")

PACKAGES = ("stealcheck", "adversarial-robustness-toolbox", "torch", "torchvision", "timm", "scikit-learn",
            "numpy", "pandas", "pydantic", "mlxtend")


@dataclass
class RunOutcome:
    """What the CLI needs after a run."""

    run_dir: Path
    status: str
    gates: list[GateResult] = field(default_factory=list)

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The git revision of the stealcheck source tree, when it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def default_run_dir(scenario: Scenario) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(scenario.model.output.dir) / scenario.name / stamp


def latest_unfinished_run(scenario: Scenario) -> Path | None:
    parent = Path(scenario.model.output.dir) / scenario.name
    if not parent.exists():
        return None
    for run in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        try:
            if read_summary(run).get("status") != "complete":
                return run
        except (ScenarioError, ValueError):
            continue
    return None


class _Data:
    """Loads each named data set once, on first use."""

    def __init__(self, scenario: Scenario, ctx: DataContext):
        self.scenario = scenario
        self.ctx = ctx
        self._loaded: dict[str, Dataset] = {}

    def fingerprint(self, role: str) -> dict:
        ref = self.scenario.data[role]
        return {"source": ref.source, "params": ref.params.model_dump(mode="json"), "seed": self.ctx.seed,
                "shape": list(self.ctx.input_shape), "range": list(self.ctx.input_range)}

    def __call__(self, role: str) -> Dataset:
        if role not in self._loaded:
            if role not in self.scenario.data:
                raise ScenarioError(f"this scenario needs a data set '{role}'.", path="data")
            ref = self.scenario.data[role]
            info = registry.data_sources.get(ref.source)
            ds = info.obj(ref.params, dataclasses.replace(self.ctx, role=role))
            if len(ds) == 0:
                raise ScenarioError(f"data set '{role}' ({ref.source}) is empty.", path=f"data.{role}")
            self._loaded[role] = ds
            log.info("data %s: %s, %d samples%s", role, ds.name, len(ds), "" if ds.y is None else ", labelled")
        return self._loaded[role]


def resolve_run_dir(scenario: Scenario, out_dir: str | Path | None, resume: bool) -> Path:
    """The run folder (not made here): new or empty, or with ``resume`` an unfinished run's."""
    if resume:
        run_dir = Path(out_dir) if out_dir else latest_unfinished_run(scenario)
        if run_dir is None or not (run_dir / "summary.json").exists():
            raise ScenarioError(f"--resume: no unfinished run of '{scenario.name}' to resume"
                                + (f" in {out_dir}" if out_dir else f" under {scenario.model.output.dir}/"))
        return run_dir
    run_dir = Path(out_dir) if out_dir else default_run_dir(scenario)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ScenarioError(f"run folder {run_dir} exists and is not empty; use --resume to continue it "
                            "or choose another --out.")
    return run_dir


def run_scenario(scenario: Scenario, *, out_dir: str | Path | None = None, resume: bool = False,
                 quiet: bool = False, fresh: bool = False) -> RunOutcome:
    """Run ``scenario``; results, summary, log and report go to the run folder.

    Whatever can reject the user's input (reading the data sets, building or loading the victim,
    checking shapes and sizes) runs before the run folder is made, so invalid input leaves no
    half-made folder behind; what is logged meanwhile is held and written to run.log once the folder
    exists. A ScenarioError that can only come later (e.g. while fitting detectors) removes the new
    folder again, as long as no cell has finished. A resumed folder is never removed.
    """
    clock_start = time.monotonic()  # the session's wall time includes preparing the victim
    run_dir = resolve_run_dir(scenario, out_dir, resume)
    held = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)  # flushed by hand
    log.addHandler(held)
    log.setLevel(logging.INFO)
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
        prepared = _prepare(scenario, quiet, fresh)
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
        return _run(scenario, prepared, run_dir, resume, quiet, clock_start)
    except ScenarioError:
        if made is not None and not resume and not ResultsStore(run_dir).done_cells():
            _close_log(held, handler)  # run.log is open inside the folder
            _discard_run_dir(run_dir, made)
        raise
    finally:
        _close_log(held, handler, terminal)
        logging.captureWarnings(False)


def _close_log(*handlers: logging.Handler | None) -> None:
    for h in handlers:
        if h is not None:
            log.removeHandler(h)
            logging.getLogger("py.warnings").removeHandler(h)
            h.close()


class TerminalWarnings(logging.Handler):
    """stealcheck's own warnings (e.g. an ill-conditioned equation solve) reach the terminal too, one
    line each, through tqdm so that a progress bar is not broken; run.log keeps them with the rest."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(f"stealcheck: warning: {record.getMessage()}", file=sys.stderr)
        except Exception:  # a closed or odd stderr must not fail the run
            self.handleError(record)


def _discard_run_dir(run_dir: Path, made: list[Path]) -> None:
    """Remove what the run made of its folder: the folder (emptied if it was there before) and new parents."""
    shutil.rmtree(run_dir, ignore_errors=True)
    if run_dir not in made:
        run_dir.mkdir(parents=True, exist_ok=True)  # an empty --out folder given by the user stays
    for parent in made:
        if parent != run_dir:
            try:
                parent.rmdir()
            except OSError:  # not empty: something else lives there
                break


@dataclass
class _Prepared:
    """What a run builds from the user's input before its folder exists: data, victim, caches."""

    cache: Cache
    data: _Data
    victim: Victim
    test: Dataset
    pool: Dataset | None
    defender: dt.DefenderData | None
    progress: bool  # inner progress bars (victim, thieves, attacks, detectors): only on a terminal


def _prepare(scenario: Scenario, quiet: bool, fresh: bool) -> _Prepared:
    """Read every data set, build (or load) the victim and check the data against it.

    Everything here may raise ScenarioError on bad input; nothing here writes to the run folder.
    """
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    m = scenario.model
    progress = show_progress_bars(quiet)
    cache = Cache(m.output.cache_dir, read=not fresh)
    victim_info = registry.victims.get(scenario.victim.kind)
    vparams = scenario.victim.params
    input_spec = vparams.input
    base_dir = Path(scenario.source_path).resolve().parent if scenario.source_path else Path.cwd()
    data_ctx = DataContext(tuple(input_spec.shape), tuple(input_spec.range), m.data_seed, str(base_dir))
    data = _Data(scenario, data_ctx)
    vctx = VictimContext(load_data=data, data_fingerprint=data.fingerprint, cache=cache, seed=m.data_seed,
                         progress=progress, base_dir=base_dir)
    for role in scenario.data:  # each declared data set, so that a bad file stops the run before training
        data(role)
    t0 = time.perf_counter()
    victim: Victim = victim_info.obj.build(vparams, vctx)
    log.info("victim ready: %s (%.1fs) %s", victim.description, time.perf_counter() - t0, victim.info)

    test = data("test")
    if m.evaluation.test_limit:
        test = test.subset(np.arange(min(len(test), m.evaluation.test_limit)))
    needs_pool = any(uses_pool(registry.attacks.get(a.plugin), a.params) for a in scenario.attacks)
    pool = data("attacker") if needs_pool else None
    for a in scenario.attacks:
        largest = max(scenario.budgets_of(a))
        if pool is not None and uses_pool(registry.attacks.get(a.plugin), a.params) and len(pool) < largest:
            raise ScenarioError(f"the attacker pool holds {len(pool)} samples, fewer than the largest budget "
                                f"of attack '{a.id}' ({largest}).", path="budgets")
    if test.y is not None and test.y.max() >= victim.nb_classes:
        raise ScenarioError(f"test labels go up to {test.y.max()} but the victim has {victim.nb_classes} classes.",
                            path="data.test")
    defender = dt.defender_data(scenario, data, data.fingerprint, m.data_seed) if scenario.detectors else None
    return _Prepared(cache, data, victim, test, pool, defender, progress)


def show_progress_bars(quiet: bool) -> bool:
    """Whether progress bars are drawn: not with --quiet, and only on a terminal (their redraws are
    carriage returns, which fill a log file with noise)."""
    return not quiet and _stderr_is_terminal()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def detection_attacks(scenario: Scenario) -> list:
    """The attacks whose queries the detection track scores."""
    chosen = scenario.model.detection.attacks
    return [a for a in scenario.attacks if chosen is None or a.id in chosen]


def planned_cells(scenario: Scenario) -> list[str]:
    """Every cell of a run, as its journal key, in the order the run does them.

    The one definition of what a run counts: the progress output, summary.json's ``cells`` and so the
    report all count these. Cells: the detectors' costs (when detectors are declared), one utility
    cell per defence, one extraction cell per seed x defence x attack, one detection cell per scored
    attack. Because the runner appends each cell's rows as it finishes and a resume keeps exactly
    the finished cells, which come first in this order, results.csv's rows follow this order too.
    """
    m = scenario.model
    keys = [cell_key("detectors", "")] if scenario.detectors else []
    keys += [cell_key("utility", d.id) for d in scenario.defences]
    keys += [cell_key("extraction", d.id, a.id, seed)
             for seed in m.seeds for d in scenario.defences for a in scenario.attacks]
    if scenario.detectors:
        keys += [cell_key("detection", "", a.id, m.seeds[0]) for a in detection_attacks(scenario)]
    return keys


class CellProgress:
    """Counts finished cells for the progress output and summary.json's ``cells`` alike.

    On a terminal it draws a tqdm bar. When stderr is not a terminal (a log file, CI), it prints one
    plain line per finished cell instead, with no carriage returns. Cells restored from the journal
    of a resumed run count as done from the start. ``--quiet`` shows nothing, but still counts.
    """

    def __init__(self, planned: list[str], done: set[str], summary: dict, quiet: bool):
        restored = sum(k in done for k in planned)
        self.total = len(planned)
        self.counts = summary["cells"] = {"total": self.total, "done": restored, "restored": restored,
                                          "from_cache": 0}
        self.lines = not quiet and not _stderr_is_terminal()
        self.bar = tqdm(total=self.total, initial=restored, desc="cells", unit="cell", disable=quiet or self.lines)
        self.label, self.t0 = "", time.perf_counter()
        if self.lines and restored:
            self._print(f"resuming: {restored} of {self.total} cells were done before")

    def start(self, label: str) -> None:
        self.label, self.t0 = label, time.perf_counter()
        self.bar.set_postfix_str(label)

    def finish(self, from_cache: bool = False) -> None:
        self.counts["done"] += 1
        self.counts["from_cache"] += int(from_cache)
        self.bar.update(1)
        if self.lines:
            how = "reused from the cache" if from_cache else f"done in {time.perf_counter() - self.t0:.1f} s"
            self._print(f"[{self.counts['done']}/{self.total}] {self.label}: {how}")

    def close(self) -> None:
        self.bar.close()

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def _run(scenario: Scenario, prepared: _Prepared, run_dir: Path, resume: bool, quiet: bool,
         clock_start: float) -> RunOutcome:
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
        "stealcheck_version": package_versions()["stealcheck"],
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
        "scenario_as_written": scenario.as_written,
        "scenario_resolved": scenario.resolved_dict(),
        "attacks": {a.id: a.plugin for a in scenario.attacks},
        "defences": {d.id: d.plugin for d in scenario.defences},
        "packages": package_versions(),
        "git_revision": git_revision(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                     "torch_threads": torch.get_num_threads()},
        "run_dir": str(run_dir),
        "gates": [],
        "cells": {},
    }, previous=previous, clock_start=clock_start)
    summary.save()
    outcome = RunOutcome(run_dir, "running")
    try:
        _execute(scenario, prepared, run_dir, store, done, summary, quiet)
        summary["status"] = "complete"
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
        named = {**summary["defences"], **{d.id: d.plugin for d in scenario.detectors}}
        gates = [evaluate_gate(g, frame, summary["attacks"], named,
                               {a.id: scenario.budgets_of(a) for a in scenario.attacks}) for g in m.expect]
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


def _execute(scenario: Scenario, prepared: _Prepared, run_dir: Path, store: ResultsStore, done: set[str],
             summary: RunSummary, quiet: bool) -> None:
    m = scenario.model
    progress = prepared.progress
    cache, data, victim, test, pool = prepared.cache, prepared.data, prepared.victim, prepared.test, prepared.pool
    raw_test = victim.predict_proba(test.x)
    rng = np.random.default_rng(m.data_seed + 7919)
    lo, hi = victim.clip_values
    unif_x = rng.uniform(lo, hi, size=(m.evaluation.uniform_samples, *victim.input_shape)).astype(np.float32) \
        if m.evaluation.uniform_samples else None
    raw_unif = victim.predict_proba(unif_x) if unif_x is not None else None
    victim_acc = float(np.mean(raw_test.argmax(1) == test.y)) if test.y is not None else None
    summary["victim"] = {"kind": scenario.victim.kind, "description": victim.description,
                         "nb_classes": victim.nb_classes, "input_shape": list(victim.input_shape),
                         "output": scenario.victim.output, "test_accuracy": victim_acc,
                         "test_samples": len(test), "pool": pool.name if pool is not None else None,
                         "pool_samples": len(pool) if pool is not None else None, **victim.info}
    cells = CellProgress(planned_cells(scenario), done, summary, quiet)
    summary.save()
    victim_name = victim.description
    thief_arch = m.thief.architecture or victim.thief_architecture
    thief_arch_params = m.thief.arch_params if m.thief.arch_params is not None else (
        victim.thief_arch_params if m.thief.architecture in (None, victim.thief_architecture) else {})
    summary["thief"] = {"architecture": thief_arch, "arch_params": thief_arch_params,
                        **m.thief.model_dump(exclude={"architecture", "arch_params"})}

    extraction_metrics = [i for i in registry.metrics.items()
                          if i.meta["scope"] == "extraction" and not i.meta.get("computed_by_runner")]
    utility_metrics = [i for i in registry.metrics.items()
                       if i.meta["scope"] == "utility" and not i.meta.get("computed_by_runner")]
    victim_identity = victim.info.get("cache_key") or victim.info.get("file_sha256")

    # Detectors first: active defences are driven by them.
    fitted: dict[str, dt.FittedDetector] = {}
    defender = prepared.defender
    if defender is not None:
        key = cell_key("detectors", "")
        cells.start("detectors: fit and cost")
        dctx = dt.detector_context(victim, defender, cache, victim_identity, m.data_seed, progress)
        fitted = dt.fit_detectors(scenario, dctx, cache, victim_identity, summary["stealcheck_version"])
        summary["detectors"] = {i: {"plugin": f.ref.plugin, "fit_seconds": f.fit_seconds, "from_cache": f.from_cache,
                                    "per_client": f.per_client, "replaces_victim": f.detector.replaces_victim,
                                    **f.detector.summary()}
                                for i, f in fitted.items()}
        summary["detection"] = {**m.detection.model_dump(mode="json"),
                                "benign": defender.evaluation.name, "benign_samples": len(defender.evaluation),
                                "calibration_samples": len(defender.calibration),
                                "outliers": defender.outliers.name if defender.outliers is not None else None}
        if key not in done:
            store.append(dt.detector_rows(fitted, victim, test, defender.evaluation.x[:1000], victim.description))
            store.finish_cell(key)
            cells.finish()
        summary.save()

    served: dict[str, list] = {}
    answering: dict[str, Any] = {}
    for d in scenario.defences:
        info = registry.defences.get(d.plugin)
        answering[d.id] = victim.predict_proba
        if info.meta.get("needs_detector"):
            f = fitted[d.params.detector]
            served[d.id] = info.obj.build(d.params, victim.nb_classes, detector=f.detector,
                                          calibration_scores=f.calibration_scores)
            if f.detector.replaces_victim:
                answering[d.id] = f.detector.serving_predict
        else:
            served[d.id] = info.obj.build(d.params, victim.nb_classes)
    driven = {d.id for d in scenario.defences if registry.defences.get(d.plugin).meta.get("needs_detector")}

    metric_names = sorted(i.name for i in extraction_metrics)

    def cell_fingerprint(seed: int, d, a) -> str | None:
        """What determines a cell's results; None when the victim has no stable identity."""
        if not (m.output.cache_cells and victim_identity):
            return None
        return fingerprint({"victim": victim_identity, "output": [scenario.victim.output, scenario.victim.top_k],
                            "defence": d.to_dict(), "attack": a.to_dict(), "seed": seed,
                            "budgets": scenario.budgets_of(a),
                            "thief": summary["thief"],
                            "data": {role: data.fingerprint(role) for role in sorted(scenario.data)},
                            "evaluation": m.evaluation.model_dump(), "metrics": metric_names,
                            "version": summary["stealcheck_version"],
                            # an active defence depends on its detector and the calibration split
                            "detectors": ([r.to_dict() for r in scenario.detectors],
                                          m.detection.model_dump(mode="json"))
                            if d.id in driven or uses_detectors(a) else None})

    def make_oracle(defence_id: str, budget: int | None) -> Oracle:
        return Oracle(answering[defence_id], victim.input_shape, victim.nb_classes, victim.clip_values,
                      postprocessors=served[defence_id], output_mode=scenario.victim.output,
                      top_k=scenario.victim.top_k, budget=budget,
                      leaf_predict=victim.leaf_ids, reference_parameters=victim.parameters)

    for d in scenario.defences:
        key = cell_key("utility", d.id)
        if key in done:
            continue
        cells.start(f"utility of {d.id}")
        oracle = make_oracle(d.id, None)
        np.random.seed(m.data_seed)  # GaussianNoise samples with np.random
        # Honest users send their queries in small batches, as an application would.
        answers = [oracle.predict(test.x[i:i + HONEST_BATCH], client_id="honest-users")
                   for i in range(0, len(test.x), HONEST_BATCH)]
        ev = UtilityEval(raw_test, np.concatenate(answers), test.y)
        rows = [{"metric": info.name, "value": info.obj(ev)} for info in utility_metrics]
        rows += service_rows(oracle.clients["honest-users"])
        store.append({"kind": "utility", "victim": victim_name, "defence": d.id, "attack": "", "budget": "",
                      "seed": "", **r} for r in rows)
        store.finish_cell(key)
        cells.finish()
        summary.save()

    for seed, d, a in ((seed, d, a) for seed in m.seeds for d in scenario.defences for a in scenario.attacks):
        key = cell_key("extraction", d.id, a.id, seed)
        if key in done:
            continue
        cells.start(f"{a.id} x {d.id} seed {seed}")
        cached_key = cell_fingerprint(seed, d, a)
        if cached_key and cache.has("cells", cached_key):
            rows = json.loads((cache.path("cells", cached_key) / "rows.json").read_text())
            store.append(rows)
            store.finish_cell(key)
            log.info("%s vs %s seed %s: results reused from the cache (%s)", a.id, d.id, seed, cached_key)
            cells.finish(from_cache=True)
            summary.save()
            continue
        cell_rows: list[dict] = []
        budgets = scenario.budgets_of(a)
        oracle = make_oracle(d.id, max(budgets))
        ctx = AttackContext(
            oracle=oracle, pool=pool, budgets=budgets, thief_spec=m.thief, seed=seed, progress=progress,
            load_data=data, detectors={i: f.detector for i, f in fitted.items()},
            make_thief=lambda: make_thief(m.thief, thief_arch, thief_arch_params, victim.input_shape,
                                          victim.nb_classes, victim.clip_values, seed, progress=progress,
                                          base_dir=data.ctx.base_dir))
        attack = registry.attacks.get(a.plugin).obj(a.params)
        elapsed = 0.0
        tick = time.perf_counter()
        for budget, thief in attack.run(ctx):
            elapsed += time.perf_counter() - tick
            ev = ExtractionEval(raw_test, thief.predict_proba(test.x), test.y,
                                raw_unif, thief.predict_proba(unif_x) if unif_x is not None else None,
                                oracle.queries_used)
            rows = [{"metric": info.name, "value": info.obj(ev)} for info in extraction_metrics]
            rows.append({"metric": "attack_seconds", "value": round(elapsed, 3)})
            rows += service_rows(oracle.clients.get(oracle.client_id, ClientRecord()))
            # Attack-specific figures (e.g. parameter error of an extracted linear model).
            extra = getattr(thief, "extra_metrics", None)
            rows += [{"metric": k, "value": float(v)} for k, v in (extra() if callable(extra) else {}).items()]
            rows = [{"kind": "extraction", "victim": victim_name, "defence": d.id, "attack": a.id,
                     "budget": budget, "seed": seed, **r} for r in rows]
            store.append(rows)
            cell_rows += rows
            log.info("%s vs %s seed %s budget %s: fidelity %.4f (queries %d, %.1fs)", a.id, d.id, seed, budget,
                     next(r["value"] for r in rows if r["metric"] == "fidelity"), oracle.queries_used, elapsed)
            tick = time.perf_counter()
        yielded = sorted({int(r["budget"]) for r in cell_rows})
        if yielded != budgets:
            raise RuntimeError(f"attack '{a.id}' reported checkpoints {yielded}, expected {budgets}")
        if cached_key:
            with cache.writer("cells", cached_key) as tmp:
                (tmp / "rows.json").write_text(json.dumps(cell_rows))
        store.finish_cell(key)
        cells.finish()
        summary.save()
    if fitted:
        _detection_phase(scenario, run_dir, store, done, fitted, defender, victim, data, pool, cache,
                         victim_identity, thief_arch, thief_arch_params, summary, progress, cells)
    cells.close()


HONEST_BATCH = 32


def service_rows(record: ClientRecord) -> list[dict]:
    """What a client experienced: share of queries answered in full, response time per query."""
    seconds = record.response_seconds()
    if record.queries == 0:
        return []
    return [{"metric": "answered_share", "value": record.answered_share},
            {"metric": "latency_mean_ms", "value": float(np.mean(seconds) * 1e3) if len(seconds) else float("nan")},
            {"metric": "latency_p95_ms",
             "value": float(np.percentile(seconds, 95) * 1e3) if len(seconds) else float("nan")}]


def uses_detectors(a) -> bool:
    """Whether an attack reads the deployed detectors' scores (an adaptive attacker)."""
    refs = registry.attacks.get(a.plugin).meta.get("detector_refs")
    return bool(refs(a.params)) if callable(refs) else False


def attack_pool_size(a, info, pool: Dataset | None, data: "_Data") -> int | None:
    """How many distinct proxy samples an attack can query (None: it does not sample a pool)."""
    size_of = info.meta.get("pool_size")
    if callable(size_of):
        return size_of(a.params, pool, data)
    return len(pool) if uses_pool(info, a.params) and pool is not None else None


def _detection_phase(scenario: Scenario, run_dir: Path, store: ResultsStore, done: set[str],
                     fitted: dict[str, dt.FittedDetector], defender: dt.DefenderData, victim: Victim, data: _Data,
                     pool: Dataset | None, cache: Cache, victim_identity: Any, thief_arch: str,
                     thief_arch_params: dict, summary: RunSummary, progress: bool, cells: CellProgress) -> None:
    """Score benign and attack queries with every detector; rows of kind 'detection'."""
    m = scenario.model
    spec = m.detection
    seed = m.seeds[0]
    scores_dir = run_dir / "detection"
    scores_dir.mkdir(exist_ok=True)
    benign_x = defender.evaluation.x
    benign_scores = {i: np.asarray(f.detector.score(benign_x), dtype=np.float64)
                     for i, f in fitted.items() if not f.per_client}
    for a in detection_attacks(scenario):
        key = cell_key("detection", "", a.id, seed)
        if key in done:
            continue
        cells.start(f"detection: {a.id}")
        info = registry.attacks.get(a.plugin)
        budgets = list(spec.budgets)
        size = attack_pool_size(a, info, pool, data)
        if size is not None:
            budgets = [b for b in spec.budgets if b <= size]
            if budgets != list(spec.budgets):
                log.warning("detection: attack %s scored at %s only: its pool holds %d samples", a.id,
                            budgets or "no budget", size)
            if not budgets:  # nothing to score: the cell is done, and journalled so that the counts agree
                store.finish_cell(key)
                cells.finish()
                continue

        def make_ctx(oracle: Oracle, budgets: list[int]) -> AttackContext:
            return AttackContext(
                oracle=oracle, pool=pool, budgets=budgets, thief_spec=m.thief, seed=seed, progress=progress,
                load_data=data, detectors={i: f.detector for i, f in fitted.items()},
                make_thief=lambda: make_thief(m.thief, thief_arch, thief_arch_params, victim.input_shape,
                                              victim.nb_classes, victim.clip_values, seed, progress=progress,
                                              base_dir=data.ctx.base_dir))

        key_parts = {"victim": victim_identity, "output": [scenario.victim.output, scenario.victim.top_k],
                     "seed": seed, "thief": summary["thief"],
                     "data": {role: data.fingerprint(role) for role in sorted(scenario.data)},
                     "version": summary["stealcheck_version"],
                     "detectors": ([r.to_dict() for r in scenario.detectors], m.detection.model_dump(mode="json"))
                     if uses_detectors(a) else None} if victim_identity else None
        t0 = time.perf_counter()
        queries = dt.collect_attack_queries(scenario, a, budgets, victim, make_ctx, cache, key_parts)
        log.info("detection: %s queries collected (%.1fs)", a.id, time.perf_counter() - t0)
        rows: list[dict] = []
        for budget, xq in queries.items():
            if len(xq) == 0:
                continue
            for det_id, f in fitted.items():
                rows += dt.score_rows(det_id, f, a.id, budget, seed, benign_x, xq, spec, victim.description,
                                      scores_dir, benign_scores.get(det_id))
                auroc = next((r["value"] for r in rows if r["defence"] == det_id and r["budget"] == budget
                              and r["metric"] == "auroc"), None)
                if auroc is not None:
                    log.info("detection: %s vs %s @ %d: AUROC %.4f", det_id, a.id, budget, auroc)
        store.append(rows)
        store.finish_cell(key)
        cells.finish()
        summary.save()
