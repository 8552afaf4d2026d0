"""The detection track of a run: fit detectors on what the defender has, collect the queries each
attack really sends, score both, and write detection rows, detector cost rows and raw scores.

Benign queries are in-distribution samples the victim never trained on (the scenario's ``benign``
data set, or ``test``), split once (seeded) into a calibration part — given to detectors for
standardising and to active defences for thresholds — and an evaluation part that is scored.
Attack queries are the first N inputs an attack sent to the *undefended* victim, recorded by the
oracle; they are cached by what determines them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import registry
from .attacks.base import AttackContext
from .cache import Cache, fingerprint
from .datasets import Dataset
from .detectors.detectors import Detector, DetectorContext
from .detection import DETECTION_METRICS, detection_metrics, mix_at_ratio
from .errors import ScenarioError
from .oracle import Oracle
from .scenario import PluginRef, Scenario, benign_role
from .seeds import derive_seed
from .victim import Victim

log = logging.getLogger("stealcheck")

DETECTOR_CACHE_VERSION = 1
SCORES_DIR = "detection"  # the run folder's raw scores, read by the report


@dataclass
class FittedDetector:
    """A fitted detector, its scores on the benign calibration set, and what it cost."""

    ref: PluginRef
    detector: Detector
    calibration_scores: np.ndarray | None
    fit_seconds: float | None
    from_cache: bool

    @property
    def per_client(self) -> bool:
        return bool(self.detector.per_client)


@dataclass
class DefenderData:
    """What the defender has: its training data, benign held-out data (calibration / evaluation)."""

    train: Dataset
    calibration: Dataset
    evaluation: Dataset
    outliers: Dataset | None
    fingerprint: dict = field(default_factory=dict)


def defender_data(scenario: Scenario, load: Callable[[str], Dataset], data_fingerprint: Callable[[str], Any],
                  seed: int) -> DefenderData:
    """Split the benign set into calibration and evaluation parts (seeded, fixed across runs)."""
    spec = scenario.model.detection
    if "victim_train" not in scenario.data:
        raise ScenarioError("detectors are fitted on the defender's own training data: data.victim_train is "
                            "required when detectors are declared.", path="data")
    role = benign_role(scenario)
    benign = load(role)
    perm = np.random.default_rng(derive_seed(seed, "benign split")).permutation(len(benign))
    n_cal = int(round(spec.calibration_fraction * len(benign)))
    if n_cal < 1 or len(benign) - n_cal < 1:
        raise ScenarioError(f"the benign set '{role}' ({len(benign)} samples) is too small to split into "
                            "calibration and evaluation parts.", path="detection.calibration_fraction")
    cal, ev = perm[:n_cal], perm[n_cal:]
    if spec.benign_limit:
        ev = ev[: spec.benign_limit]
    outliers = load(spec.outliers) if spec.outliers in scenario.data else None
    fp = {"train": data_fingerprint("victim_train"), "benign": data_fingerprint(role),
          "calibration_fraction": spec.calibration_fraction, "seed": seed,
          "outliers": data_fingerprint(spec.outliers) if outliers is not None else None}
    return DefenderData(load("victim_train"), benign.subset(cal, f"{benign.name} (calibration)"),
                        benign.subset(ev, f"{benign.name} (evaluation)"), outliers, fp)


def detector_context(victim: Victim, data: DefenderData, cache: Cache, victim_identity: Any, seed: int,
                     progress: bool) -> DetectorContext:
    return DetectorContext(
        predict_proba=victim.predict_proba, nb_classes=victim.nb_classes, input_shape=tuple(victim.input_shape),
        clip_values=tuple(victim.clip_values), train=data.train, calibration=data.calibration,
        outliers=data.outliers, logits=victim.logits if victim.network is not None else None,
        make_network=victim.network_factory, victim_network=victim.network,
        train_recipe=dict(victim.train_recipe) or {"steps": 800, "batch_size": 64, "lr": 3e-3},
        seed=seed, progress=progress, cache=cache,
        identity={"victim": victim_identity, **data.fingerprint})


def fit_detectors(scenario: Scenario, ctx: DetectorContext, cache: Cache, victim_identity: Any,
                  version: str | None) -> dict[str, FittedDetector]:
    """Fit (or load from the cache) every declared detector; score the calibration set."""
    fitted: dict[str, FittedDetector] = {}
    for ref in scenario.detectors:
        cls = registry.detectors.get(ref.plugin).obj
        det: Detector = cls(ref.params)
        key = fingerprint({"detector": ref.plugin, "params": ref.params.model_dump(mode="json"),
                           "identity": ctx.identity, "version": version,
                           "recipe": DETECTOR_CACHE_VERSION}) if victim_identity else None
        from_cache = False
        if key and cache.has("detectors", key):
            try:
                det.load(cache.path("detectors", key), ctx)
                from_cache = True
            except Exception as exc:  # a stale or damaged cache entry is refitted, not fatal
                log.warning("detector %s: cached copy unusable (%s); refitting", ref.id, exc)
                det = cls(ref.params)
        if not from_cache:
            log.info("fitting detector %s (%s)", ref.id, ref.plugin)
            det.fit(ctx)
            log.info("detector %s fitted in %.1fs", ref.id, det.fit_seconds or 0.0)
            if key:
                with cache.writer("detectors", key) as tmp:
                    det.save(tmp)
        cal = None if det.per_client else np.asarray(det.score(ctx.calibration.x), dtype=np.float64)
        fitted[ref.id] = FittedDetector(ref, det, cal, det.fit_seconds, from_cache)
    return fitted


def time_per_query(fn: Callable[[np.ndarray], Any], x: np.ndarray, repeats: int = 3) -> float:
    """Median seconds per query of ``fn`` on ``x`` (batched as ``fn`` batches)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / max(1, len(x))


def cost_ratio(score: Callable[[np.ndarray], Any], victim: Callable[[np.ndarray], Any], x: np.ndarray,
               repeats: int = 3) -> tuple[float, float]:
    """Seconds per query of ``score`` and of ``victim`` on ``x``, timed alternately (median of ``repeats``
    each), so that a change in the machine's load during the run reaches both sides of the ratio; the
    order flips each round, so neither side always runs in the other's wake."""
    times: dict[str, list[float]] = {"score": [], "victim": []}
    fns = {"score": score, "victim": victim}
    for r in range(repeats):
        for name in (("victim", "score") if r % 2 == 0 else ("score", "victim")):
            times[name].append(time_per_query(fns[name], x, repeats=1))
    return float(np.median(times["score"])), float(np.median(times["victim"]))


def detector_rows(fitted: dict[str, FittedDetector], victim: Victim, test: Dataset, timing_x: np.ndarray,
                  victim_name: str) -> list[dict]:
    """Cost rows per detector: fit time, scoring vs victim inference time (timed alternately, per detector),
    served accuracy."""
    rows = []
    for det_id, f in fitted.items():
        values: dict[str, float] = {"fit_seconds": float(f.fit_seconds) if f.fit_seconds is not None else np.nan}
        if not f.per_client:
            score_s, victim_s = cost_ratio(f.detector.score, victim.predict_proba, timing_x)
            values.update(score_ms_per_query=score_s * 1e3, victim_ms_per_query=victim_s * 1e3,
                          score_cost_ratio=score_s / victim_s if victim_s > 0 else np.nan)
        served = f.detector.serving_predict(test.x) if test.y is not None else None
        probs = served if served is not None else (victim.predict_proba(test.x) if test.y is not None else None)
        values["served_accuracy"] = float(np.mean(np.argmax(probs, 1) == test.y)) if probs is not None else np.nan
        rows += [{"kind": "detector", "victim": victim_name, "defence": det_id, "attack": "", "budget": "",
                  "seed": "", "metric": k, "value": v} for k, v in values.items()]
    return rows


def collect_attack_queries(scenario: Scenario, attack: PluginRef, budgets: list[int], victim: Victim,
                           make_ctx: Callable[[Oracle, list[int]], AttackContext], cache: Cache,
                           key: str) -> dict[int, np.ndarray]:
    """The first b inputs the attack sent to the undefended victim, for each detection budget b; cached
    under ``key`` (the detection cell's content address)."""
    if cache.has("queries", key):
        with np.load(cache.path("queries", key) / "queries.npz") as z:
            return {b: z[f"b{b}"] for b in budgets}
    largest = max(budgets)
    oracle = Oracle(victim.attacker_predict, victim.input_shape, victim.nb_classes, victim.clip_values,
                    output_mode=scenario.victim.output, top_k=scenario.victim.top_k, budget=largest,
                    record_limit=largest)
    plugin = registry.attacks.get(attack.plugin).obj(attack.params)
    for _budget, _thief in plugin.run(make_ctx(oracle, budgets)):
        pass
    sent = oracle.clients[oracle.client_id].inputs()
    out = {b: sent[:b] for b in budgets}
    short = [b for b in budgets if len(out[b]) < b]
    if short:
        log.warning("attack %s sent %d queries, fewer than the detection budgets %s", attack.id, len(sent), short)
    with cache.writer("queries", key) as tmp:
        np.savez_compressed(tmp / "queries.npz", **{f"b{b}": v for b, v in out.items()})
    return out


def score_rows(det_id: str, f: FittedDetector, attack_id: str, budget: int, seed: int, benign_x: np.ndarray,
               attack_x: np.ndarray, spec, victim_name: str, saved: dict[str, dict[str, np.ndarray]],
               benign_scores: np.ndarray | None) -> list[dict]:
    """Detection rows for one detector x attack x budget; the raw scores go into ``saved`` (run-folder
    path -> arrays of an npz file), which the driver writes for the report."""
    base = {"kind": "detection", "victim": victim_name, "defence": det_id, "attack": attack_id, "budget": budget,
            "seed": seed}
    if f.per_client:
        return _per_client_rows(f.detector, benign_x, attack_x, spec.prada_clients, base)
    attack_scores = np.asarray(f.detector.score(attack_x), dtype=np.float64)
    saved[f"{SCORES_DIR}/{det_id}__{attack_id}__{budget}.npz"] = {"benign": benign_scores, "attack": attack_scores}
    mix = mix_at_ratio(len(benign_scores), len(attack_scores), spec.malicious_ratio, seed)
    rows = [{**base, "metric": k, "value": v}
            for k, v in detection_metrics(benign_scores[mix.benign], attack_scores[mix.attack]).items()]
    for ratio in spec.ratio_sweep:
        m = mix_at_ratio(len(benign_scores), len(attack_scores), ratio, seed)
        values = detection_metrics(benign_scores[m.benign], attack_scores[m.attack])
        rows += [{**base, "metric": f"{k}@{ratio:g}", "value": values[k]} for k in ("auroc", "aupr")]
    return rows


def _per_client_rows(det: Detector, benign_x: np.ndarray, attack_x: np.ndarray, clients: list[int],
                     base: dict) -> list[dict]:
    rows = []
    benign_at = det.flag_stream(benign_x)
    rows.append({**base, "metric": "benign_flagged", "value": float(benign_at is not None)})
    for n in clients:
        streams = [attack_x[i::n] for i in range(n)]
        flags = [det.flag_stream(s) for s in streams if len(s)]
        flagged = [i for i in flags if i is not None]
        share = len(flagged) / max(1, len(flags))
        suffix = "" if n == 1 else f"@{n}_clients"
        rows.append({**base, "metric": "clients_flagged" + suffix, "value": share})
        # Queries the first flagged client had sent (1-based) — NaN when no client is flagged.
        rows.append({**base, "metric": "queries_to_flag" + suffix,
                     "value": float(min(flagged) + 1) if flagged else float("nan")})
    return rows


def load_scores(run_dir: Path) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """The raw scores a run saved: (detector, attack, budget) -> {'benign', 'attack'}."""
    out = {}
    folder = Path(run_dir) / SCORES_DIR
    if not folder.exists():
        return out
    for path in sorted(folder.glob("*.npz")):
        parts = path.stem.split("__")
        if len(parts) != 3:
            continue
        with np.load(path) as z:
            out[(parts[0], parts[1], int(parts[2]))] = {"benign": z["benign"], "attack": z["attack"]}
    return out


__all__ = ["DETECTION_METRICS", "FittedDetector", "DefenderData", "defender_data", "detector_context",
           "fit_detectors", "cost_ratio", "detector_rows", "collect_attack_queries", "score_rows", "load_scores"]
