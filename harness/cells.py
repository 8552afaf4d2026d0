"""What each kind of cell computes: ``run_cell(ctx, cell) -> CellResult``.

A cell depends only on the frozen, picklable :class:`RunContext` and on the artefacts of the cells
it declares, which it reads from the content-addressed cache: the victim (``victims/``), the
fitted detectors (``detectors/``), an attack's recorded queries (``queries/``). So a cell can run
in this process or in a Dask worker on another machine that sees the same cache.

What every cell of a process shares (the data sets, the victim loaded from the cache, its answers
on the test set, the fitted detectors) is built once per process by :func:`world` and kept for
the next cell of the same run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from . import detection_track as dt
from . import registry
from .attacks.base import AttackContext, seed_everything
from .cache import Cache, fingerprint
from .datasets import DataContext, Dataset
from .errors import ScenarioError
from .metrics import ExtractionEval, UtilityEval
from .oracle import ClientRecord, Oracle
from .plan import Cell, data_fingerprint, extraction_metric_names
from .scenario import Scenario, build_scenario, check_pool_size, uses_pool
from .seeds import attack_seed, derive_seed
from .thief import make_thief
from .victim import Victim, VictimContext

log = logging.getLogger("stealcheck")

HONEST_BATCH = 32  # honest users send their queries in small batches, as an application would


@dataclass(frozen=True)
class RunContext:
    """Everything a cell needs besides its declared inputs; frozen and picklable (it travels to workers)."""

    scenario: dict  # the scenario as written
    source_path: str | None  # its file (user code and relative paths are found beside it)
    cache_dir: str
    version: str | None  # stealcheck's version, part of every content address
    fresh: bool = False  # recompute cached results (and cache the new ones)
    progress: bool = False  # inner progress bars (only on a terminal, in the driver's process)
    torch_threads: int | None = None  # set in each worker process (Dask: one per worker)

    @cached_property
    def token(self) -> str:
        return fingerprint(dataclasses.asdict(self))


@dataclass
class CellResult:
    """What a finished cell hands the driver: rows for results.csv and what else the run folder gets."""

    name: str  # the cell's journal key
    label: str
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # entries for summary.json (the detectors cell's)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # run-folder npz files by path
    from_cache: bool = False
    seconds: float = 0.0
    error: str | None = None  # set when the cell failed (after its retries)
    logs: list[tuple[int, str]] = field(default_factory=list)  # records made in a worker, for run.log
    files: dict[str, str] = field(default_factory=dict)  # run-folder text files by path (interactions.json)


class Data:
    """Loads each named data set of the scenario once, on first use."""

    def __init__(self, scenario: Scenario, ctx: DataContext):
        self.scenario = scenario
        self.ctx = ctx
        self._loaded: dict[str, Dataset] = {}

    def fingerprint(self, role: str) -> dict:
        return data_fingerprint(self.scenario, role)

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


class World:
    """What the cells of one run share in one process: the data, the victim and what derives from them.

    Building it reads every data set, builds or loads the victim and checks the data against it: the
    victim cell and the pre-run checks. Everything here may raise ScenarioError on bad input.
    """

    def __init__(self, ctx: RunContext, scenario: Scenario | None = None, retrain: bool = False):
        """``retrain``: ignore a cached victim (--fresh, in the driver only: workers load what it made)."""
        import torch

        if ctx.torch_threads:
            torch.set_num_threads(ctx.torch_threads)
        self.ctx = ctx
        self.scenario = scenario = scenario or build_scenario(ctx.scenario, source=ctx.source_path)
        m = scenario.model
        self.cache = Cache(ctx.cache_dir)  # reading: artefacts of other cells come from here
        spec = scenario.victim.params.input
        base_dir = scenario.base_dir
        self.data = data = Data(scenario, DataContext(tuple(spec.shape), tuple(spec.range), m.data_seed, str(base_dir)))
        vctx = VictimContext(load_data=data, data_fingerprint=data.fingerprint, cache=Cache(ctx.cache_dir, read=not retrain),
                             seed=m.data_seed, progress=ctx.progress, base_dir=base_dir)
        for role in scenario.data:  # each declared data set, so that a bad file stops the run before training
            data(role)
        t0 = time.perf_counter()
        self.victim: Victim = registry.victims.get(scenario.victim.kind).obj.build(scenario.victim.params, vctx)
        log.info("victim ready: %s (%.1fs) %s", self.victim.description, time.perf_counter() - t0, self.victim.info)
        #: the victim before any ownership scheme marked it (the deployed one is self.victim)
        self.clean_victim: Victim = self.victim
        if scenario.ownership:
            from .ownership.deploy import embed_in_training

            self.victim = embed_in_training(self, vctx.cache)
        test = data("test")
        if m.evaluation.test_limit:
            test = test.subset(np.arange(min(len(test), m.evaluation.test_limit)))
        self.test = test
        needs_pool = any(uses_pool(registry.attacks.get(a.plugin), a.params) for a in scenario.attacks)
        self.pool = data("attacker") if needs_pool else None
        self._check()
        self.defender = dt.defender_data(scenario, data, data.fingerprint, m.data_seed) if scenario.detectors else None
        victim = self.victim
        self.raw_test = victim.predict_proba(test.x)
        rng = np.random.default_rng(derive_seed(m.data_seed, "uniform inputs"))
        lo, hi = victim.clip_values
        self.unif_x = rng.uniform(lo, hi, size=(m.evaluation.uniform_samples, *victim.input_shape)).astype(np.float32) \
            if m.evaluation.uniform_samples else None
        self.raw_unif = victim.predict_proba(self.unif_x) if self.unif_x is not None else None
        self.thief_arch = m.thief.architecture or victim.thief_architecture
        self.thief_arch_params = m.thief.arch_params if m.thief.arch_params is not None else (
            victim.thief_arch_params if m.thief.architecture in (None, victim.thief_architecture) else {})
        self.fitted: dict[str, dt.FittedDetector] | None = None  # set by the detectors cell, or loaded on use
        self._benign: dict[str, np.ndarray] = {}

    def _check(self) -> None:
        """The data against the victim: pool large enough for every budget, labels within its classes."""
        pool, test = self.pool, self.test
        if pool is not None:
            check_pool_size(self.scenario, len(pool), f"({pool.name})")
        if test.y is not None and test.y.max() >= self.victim.nb_classes:
            raise ScenarioError(f"test labels go up to {test.y.max()} but the victim has {self.victim.nb_classes} "
                                "classes.", path="data.test")

    @property
    def victim_identity(self) -> Any:
        return self.victim.info.get("cache_key") or self.victim.info.get("file_sha256")

    def victim_summary(self) -> dict:
        """summary.json's ``victim`` and ``thief`` entries."""
        v, test, pool, m = self.victim, self.test, self.pool, self.scenario.model
        acc = float(np.mean(self.raw_test.argmax(1) == test.y)) if test.y is not None else None
        return {"victim": {"kind": self.scenario.victim.kind, "description": v.description,
                           "nb_classes": v.nb_classes, "input_shape": list(v.input_shape),
                           "output": self.scenario.victim.output, "test_accuracy": acc, "test_samples": len(test),
                           "pool": pool.name if pool is not None else None,
                           "pool_samples": len(pool) if pool is not None else None, **v.info},
                "thief": {"architecture": self.thief_arch, "arch_params": self.thief_arch_params,
                          **m.thief.model_dump(exclude={"architecture", "arch_params"}),
                          # which thieves trained on the unqueried pool without labels (thief.unlabelled)
                          "unlabelled_pool_used_by": [a.id for a in self.scenario.attacks if m.thief.unlabelled
                                                      and uses_pool(registry.attacks.get(a.plugin), a.params)]}}

    def detectors(self, fresh: bool = False) -> dict[str, dt.FittedDetector]:
        """The fitted detectors: fitted here once (``fresh``: ignoring the cache), else loaded from it."""
        if self.fitted is None or fresh:
            cache = Cache(self.ctx.cache_dir, read=not fresh)
            dctx = dt.detector_context(self.victim, self.defender, cache, self.victim_identity,
                                       self.scenario.model.data_seed, self.ctx.progress)
            self.fitted = dt.fit_detectors(self.scenario, dctx, cache, self.victim_identity, self.ctx.version)
            self._benign = {}
        return self.fitted

    def benign_scores(self, det_id: str) -> np.ndarray:
        """A (not per-client) detector's scores of the benign evaluation split, computed once."""
        if det_id not in self._benign:
            x = self.defender.evaluation.x
            self._benign[det_id] = np.asarray(self.detectors()[det_id].detector.score(x), dtype=np.float64)
        return self._benign[det_id]

    def oracle(self, defence_id: str, budget: int | None, evaluation: bool = False) -> Oracle:
        """The victim served through a defence (and, for an active one, its detector).

        Its queries go through the victim's attacker door (:meth:`Victim.attacker_predict`), or with
        ``evaluation`` through the evaluation's own (honest users of the utility cells): the same
        answers in process, two API keys counted apart for a remote victim."""
        d = next(d for d in self.scenario.defences if d.id == defence_id)
        info = registry.defences.get(d.plugin)
        answer = self.victim.predict_proba if evaluation else self.victim.attacker_predict
        if info.caps.needs_detector:
            f = self.detectors()[d.params.detector]
            served = info.obj.build(d.params, self.victim.nb_classes, detector=f.detector,
                                    calibration_scores=f.calibration_scores)
            if f.detector.replaces_victim:
                answer = f.detector.serving_predict
        else:
            served = info.obj.build(d.params, self.victim.nb_classes)
        v = self.victim
        if self.scenario.ownership:  # a scheme that marks the API's answers (DAWN) sits after the defences
            from .ownership.deploy import oracle_layers

            served = list(served) + oracle_layers(self)
        return Oracle(answer, v.input_shape, v.nb_classes, v.clip_values, postprocessors=served,
                      output_mode=self.scenario.victim.output, top_k=self.scenario.victim.top_k, budget=budget,
                      leaf_predict=v.leaf_ids)

    def attack_context(self, oracle: Oracle, budgets: list[int], seed: int) -> AttackContext:
        m, v = self.scenario.model, self.victim
        fitted = self.detectors() if self.scenario.detectors else {}
        return AttackContext(
            oracle=oracle, pool=self.pool, budgets=budgets, thief_spec=m.thief, seed=seed, progress=self.ctx.progress,
            load_data=self.data, detectors={i: f.detector for i, f in fitted.items()},
            make_thief=lambda: make_thief(m.thief, self.thief_arch, self.thief_arch_params, v.input_shape,
                                          v.nb_classes, v.clip_values, seed, progress=self.ctx.progress,
                                          base_dir=self.data.ctx.base_dir))


_current: tuple[str, World] | None = None  # this process's world, for the run it belongs to


def world(ctx: RunContext, prepared: World | None = None) -> World:
    """This process's :class:`World` for ``ctx``, built on first use (``prepared``: one the driver built)."""
    global _current
    if prepared is not None:
        _current = (ctx.token, prepared)
    elif _current is None or _current[0] != ctx.token:
        _current = None  # let the previous run's world go before building the next
        _current = (ctx.token, World(ctx))
    return _current[1]


def run_cell(ctx: RunContext, cell: Cell) -> CellResult:
    """Compute one cell (its dependencies are done: their artefacts are in the cache)."""
    w = world(ctx)
    t0 = time.perf_counter()
    result = RUNNERS[cell.kind](w, cell)
    result.seconds = time.perf_counter() - t0
    return result


def _victim_cell(w: World, cell: Cell) -> CellResult:
    """The victim is built with the world; record it under the cell's address (plan's cache status)."""
    summary = w.victim_summary()
    if not w.cache.has("cells", cell.key):
        with w.cache.writer("cells", cell.key) as tmp:
            (tmp / "victim.json").write_text(json.dumps(summary, default=str))
    return CellResult(cell.name, cell.label, summary={**summary, **remote_usage(w.victim)})


def _detectors_cell(w: World, cell: Cell) -> CellResult:
    """Fit every detector (or load it from the cache) and measure its cost against the victim's."""
    fitted = w.detectors(fresh=w.ctx.fresh)
    defender, m = w.defender, w.scenario.model
    summary = {"detectors": {i: {"plugin": f.ref.plugin, "fit_seconds": f.fit_seconds, "from_cache": f.from_cache,
                                 "per_client": f.per_client, "replaces_victim": f.detector.replaces_victim,
                                 **f.detector.summary()} for i, f in fitted.items()},
               "detection": {**m.detection.model_dump(mode="json"),
                             "benign": defender.evaluation.name, "benign_samples": len(defender.evaluation),
                             "calibration_samples": len(defender.calibration),
                             "outliers": defender.outliers.name if defender.outliers is not None else None}}
    if not w.cache.has("cells", cell.key):
        with w.cache.writer("cells", cell.key) as tmp:
            (tmp / "detectors.json").write_text(json.dumps(summary, default=str))
    rows = dt.detector_rows(fitted, w.victim, w.test, defender.evaluation.x[:1000], w.victim.description)
    return CellResult(cell.name, cell.label, rows, {**summary, **remote_usage(w.victim)})


def _utility_cell(w: World, cell: Cell) -> CellResult:
    oracle = w.oracle(cell.defence, None, evaluation=True)
    np.random.seed(derive_seed(w.scenario.model.data_seed, "utility", cell.defence))  # GaussianNoise uses np.random
    x = w.test.x
    answers = [oracle.predict(x[i:i + HONEST_BATCH], client_id="honest-users") for i in range(0, len(x), HONEST_BATCH)]
    ev = UtilityEval(w.raw_test, np.concatenate(answers), w.test.y)
    rows = [{"metric": info.name, "value": info.obj(ev)} for info in registry.metrics.items()
            if info.caps.scope == "utility" and not info.caps.computed_by_runner]
    rows += service_rows(oracle.clients["honest-users"])
    return CellResult(cell.name, cell.label, [{"kind": "utility", "victim": w.victim.description, "defence": cell.defence,
                                               "attack": "", "budget": "", "seed": "", **r} for r in rows],
                      summary=remote_usage(w.victim))


def _extraction_cell(w: World, cell: Cell) -> CellResult:
    """The attack against the defended victim; the copy at each checkpoint compared with the raw victim."""
    cache = Cache(w.ctx.cache_dir, read=not w.ctx.fresh)
    if cell.cached and cache.has("cells", cell.key):
        rows = json.loads((cache.path("cells", cell.key) / "rows.json").read_text())
        log.info("%s: results reused from the cache (%s)", cell.label, cell.key)
        return CellResult(cell.name, cell.label, rows, from_cache=True)
    a = next(a for a in w.scenario.attacks if a.id == cell.attack)
    budgets = w.scenario.budgets_of(a)
    data_seed = w.scenario.model.data_seed
    # The global generators (a defence's noise) start from the cell's identity, not from earlier cells.
    seed_everything(derive_seed(data_seed, cell.seed, "extraction", cell.defence, a.id))
    oracle = w.oracle(cell.defence, max(budgets))
    if w.scenario.ownership:  # each cell is its own API client (DAWN keys its marks per client)
        oracle.client_id = cell.name
    ctx = w.attack_context(oracle, budgets, attack_seed(data_seed, cell.seed, a.id))
    metrics = [info for info in registry.metrics.items() if info.name in extraction_metric_names()]
    server_count = ServerCount(w.victim)
    cell_rows: list[dict] = []
    copies: dict[int, dict] = {}  # budget -> the thief's weights, kept for the ownership cells
    elapsed, tick = 0.0, time.perf_counter()
    for budget, thief in registry.attacks.get(a.plugin).obj(a.params).run(ctx):
        elapsed += time.perf_counter() - tick
        if w.scenario.ownership and getattr(thief, "net", None) is not None:
            copies[budget] = {k: v.detach().clone() for k, v in thief.net.state_dict().items()}
        ev = ExtractionEval(w.raw_test, thief.predict_proba(w.test.x), w.test.y, w.raw_unif,
                            thief.predict_proba(w.unif_x) if w.unif_x is not None else None, oracle.queries_used)
        rows = [{"metric": info.name, "value": info.obj(ev)} for info in metrics]
        rows.append({"metric": "attack_seconds", "value": round(elapsed, 3)})
        rows += service_rows(oracle.clients.get(oracle.client_id, ClientRecord()))
        rows += server_count.rows()
        # Attack-specific figures (e.g. unknowns of an extracted linear model), then the evaluation-only ones:
        # the copy's parameters against the victim's (never on the oracle: the attack does not see them).
        extra = getattr(thief, "extra_metrics", None)
        rows += [{"metric": k, "value": float(v)} for k, v in (extra() if callable(extra) else {}).items()]
        compare = getattr(thief, "compare_with_victim", None)
        rows += [{"metric": k, "value": float(v)}
                 for k, v in (compare(w.victim.parameters) if callable(compare) else {}).items()]
        cell_rows += [{"kind": "extraction", "victim": w.victim.description, "defence": cell.defence,
                       "attack": a.id, "budget": budget, "seed": cell.seed, **r} for r in rows]
        log.info("%s budget %s: fidelity %.4f (queries %d, %.1fs)", cell.label, budget,
                 next(r["value"] for r in rows if r["metric"] == "fidelity"), oracle.queries_used, elapsed)
        tick = time.perf_counter()
    yielded = sorted({int(r["budget"]) for r in cell_rows})
    if yielded != budgets:
        raise RuntimeError(f"attack '{a.id}' reported checkpoints {yielded}, expected {budgets}")
    if cell.cached:
        with cache.writer("cells", cell.key) as tmp:
            (tmp / "rows.json").write_text(json.dumps(cell_rows))
            if w.scenario.ownership:
                from .ownership.deploy import keep_copies

                keep_copies(tmp, copies, oracle)
    return CellResult(cell.name, cell.label, cell_rows, summary=remote_usage(w.victim))


def _detection_cell(w: World, cell: Cell) -> CellResult:
    """The attack's first queries to the undefended victim, scored by every detector against benign ones."""
    spec = w.scenario.model.detection
    seed = attack_seed(w.scenario.model.data_seed, cell.seed, cell.attack)  # the undefended extraction's queries
    a = next(a for a in w.scenario.attacks if a.id == cell.attack)
    budgets = list(spec.budgets)
    size = attack_pool_size(a, registry.attacks.get(a.plugin), w.pool, w.data)
    if size is not None:
        budgets = [b for b in spec.budgets if b <= size]
        if budgets != list(spec.budgets):
            log.warning("detection: attack %s scored at %s only: its pool holds %d samples", a.id,
                        budgets or "no budget", size)
        if not budgets:  # nothing to score: the cell is done, and journalled so that the counts agree
            return CellResult(cell.name, cell.label)
    fitted = w.detectors()
    t0 = time.perf_counter()
    remote = registry.victims.get(w.scenario.victim.kind).caps.remote  # its answers may have changed since
    queries = dt.collect_attack_queries(w.scenario, a, budgets, w.victim,
                                        lambda oracle, b: w.attack_context(oracle, b, seed),
                                        Cache(w.ctx.cache_dir, read=not (w.ctx.fresh or remote)), cell.key)
    log.info("detection: %s queries collected (%.1fs)", a.id, time.perf_counter() - t0)
    benign_x = w.defender.evaluation.x
    result = CellResult(cell.name, cell.label)
    for budget, xq in queries.items():
        if len(xq) == 0:
            continue
        for det_id, f in fitted.items():
            benign = w.benign_scores(det_id) if not f.per_client else None
            rows = dt.score_rows(det_id, f, a.id, budget, cell.seed, benign_x, xq, spec, w.victim.description,
                                 result.arrays, benign)
            auroc = next((r["value"] for r in rows if r["metric"] == "auroc"), None)
            if auroc is not None:
                log.info("detection: %s vs %s @ %d: AUROC %.4f", det_id, a.id, budget, auroc)
            result.rows += rows
    return result


def _ownership_models_cell(w: World, cell: Cell) -> CellResult:
    from .ownership.cells import ownership_models_cell

    return ownership_models_cell(w, cell)


def _ownership_cell(w: World, cell: Cell) -> CellResult:
    from .ownership.cells import ownership_cell

    return ownership_cell(w, cell)


def _interaction_model_cell(w: World, cell: Cell) -> CellResult:
    from .interactions.cells import interaction_model_cell

    return interaction_model_cell(w, cell)


def _interaction_cell(w: World, cell: Cell) -> CellResult:
    from .interactions.cells import interaction_cell

    return interaction_cell(w, cell)


def _interaction_matrix_cell(w: World, cell: Cell) -> CellResult:
    from .interactions.cells import interaction_matrix_cell

    return interaction_matrix_cell(w, cell)


RUNNERS = {"victim": _victim_cell, "detectors": _detectors_cell, "utility": _utility_cell,
           "extraction": _extraction_cell, "detection": _detection_cell,
           "ownership_models": _ownership_models_cell, "ownership": _ownership_cell,
           "interaction_model": _interaction_model_cell, "interaction": _interaction_cell,
           "interaction_matrix": _interaction_matrix_cell}


def service_rows(record: ClientRecord) -> list[dict]:
    """What a client experienced: share of queries answered in full, response time per query."""
    from .defences.active import latency_summary

    if record.queries == 0:
        return []
    latency = latency_summary(record.response_seconds())
    return [{"metric": "answered_share", "value": record.answered_share},
            {"metric": "latency_mean_ms", "value": latency["mean_ms"]},
            {"metric": "latency_p95_ms", "value": latency["p95_ms"]}]


class ServerCount:
    """A remote victim's count of the attacker's queries during one cell, as the server reports it.

    Rows ``server_queries_used`` beside the oracle's own ``queries_used`` (counted on this side):
    the samples the server charged the attacker's key since the cell began. Exact when one process
    uses the key at a time (the local executor); with several Dask workers sharing the key it also
    counts the others' queries made meanwhile. No rows for in-process victims, or when the server
    reports no count."""

    IDENTITY = "attacker"

    def __init__(self, victim: Victim):
        self.usage = victim.usage
        self.start = self._now()

    def _now(self) -> tuple[int | None, int | None]:
        """(the server's last reported count, its count before this process's first query)."""
        if self.usage is None:
            return None, None
        u = self.usage().get(self.IDENTITY, {})
        return u.get("server_queries_used"), u.get("server_queries_before")

    def rows(self) -> list[dict]:
        last, before = self._now()
        if last is None:
            return []
        start = self.start[0] if self.start[0] is not None else before
        return [{"metric": "server_queries_used", "value": float(last - start)}]


def remote_usage(victim: Victim) -> dict:
    """summary.json's ``remote_queries`` (remote victims): what each client identity of this process sent,
    counted here and by the server, so far; empty for in-process victims."""
    return {"remote_queries": victim.usage()} if victim.usage is not None else {}


def attack_pool_size(a, info, pool: Dataset | None, data: Data) -> int | None:
    """How many distinct proxy samples an attack can query (None: it does not sample a pool)."""
    size_of = info.caps.pool_size
    if callable(size_of):
        return size_of(a.params, pool, data)
    return len(pool) if uses_pool(info, a.params) and pool is not None else None


__all__ = ["RunContext", "CellResult", "World", "world", "run_cell", "service_rows", "attack_pool_size"]
