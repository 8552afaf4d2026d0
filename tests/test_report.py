"""The HTML report: built from a hand-written run folder, no model training."""

from __future__ import annotations

import json
import math
import re
from html import unescape
from pathlib import Path

import pytest

from stealcheck.cli import main
from stealcheck.reports import build_report, plots
from stealcheck.reports.html import (compare, config_label, estimate, fmt, fmt_duration, fmt_estimate, relabel,
                                     wilson_interval)
from stealcheck.results import ResultsStore, read_summary, write_summary

DEFENCES = {"none": "none", "rounded:decimals=1": "rounded"}
ATTACKS = {"knockoff:strategy=random": "knockoff", "copycat": "copycat"}
BUDGETS = [100, 200]
SEEDS = [0, 1]
VICTIM = "torch conv3(width=16)"

# Fidelity per (defence, attack, budget) for seed 0; seed 1 adds SEED_STEP. copycat vs none at 200
# is thus 0.70 and 0.74: mean 0.720, sample std 0.028.
FIDELITY = {
    ("none", "knockoff:strategy=random", 100): 0.50, ("none", "knockoff:strategy=random", 200): 0.60,
    ("none", "copycat", 100): 0.55, ("none", "copycat", 200): 0.70,
    ("rounded:decimals=1", "knockoff:strategy=random", 100): 0.40,
    ("rounded:decimals=1", "knockoff:strategy=random", 200): 0.45,
    ("rounded:decimals=1", "copycat", 100): 0.52, ("rounded:decimals=1", "copycat", 200): 0.66,
}
SEED_STEP = 0.04


def extraction_rows() -> list[dict]:
    rows = []
    for (defence, attack, budget), fid in FIDELITY.items():
        for seed in SEEDS:
            f = fid + seed * SEED_STEP
            metrics = {"fidelity": f, "accuracy": f - 0.02, "r_test": 1 - f, "r_unif": 0.7, "fidelity_unif": 0.1,
                       "kl": 1.5, "queries_used": float(budget), "attack_seconds": budget / 50 + seed}
            rows += [{"kind": "extraction", "victim": VICTIM, "defence": defence, "attack": attack,
                      "budget": budget, "seed": seed, "metric": m, "value": v} for m, v in metrics.items()]
    return rows


def utility_rows() -> list[dict]:
    values = {"none": (0.976, 0.0, 0.0), "rounded:decimals=1": (0.971, 0.0067, 0.005)}
    return [{"kind": "utility", "victim": VICTIM, "defence": d, "metric": m, "value": v}
            for d, vals in values.items()
            for m, v in zip(["victim_accuracy", "output_distortion", "label_change_rate"], vals)]


def full_summary(run_dir: Path) -> dict:
    return {
        "stealcheck_version": "0.1.0", "scenario_name": "unit", "title": "Unit-test run",
        "description": "A hand-written run <script>alert(1)</script> for the report tests.",
        "status": "complete", "error": None,
        "started_at": "2026-01-02T03:04:05+00:00", "finished_at": "2026-01-02T03:06:10+00:00",
        "wall_seconds": 125.0, "resumed": False, "seeds": SEEDS, "budgets": BUDGETS, "data_seed": 0,
        "scenario_as_written": {"name": "unit", "budgets": BUDGETS, "seeds": SEEDS,
                                "attacks": ["copycat", {"knockoff": {"strategy": "random"}}]},
        "scenario_resolved": {"name": "unit"},
        "attacks": ATTACKS, "defences": DEFENCES,
        "packages": {"python": "3.11.7", "torch": "2.14.1"}, "git_revision": "abc1234",
        "platform": {"system": "Linux", "cpus": 2}, "run_dir": str(run_dir),
        "gates": [
            {"name": "copycat copies the undefended victim", "metric": "fidelity", "min": 0.5, "max": None,
             "passed": True, "observed": [{"defence": "none", "attack": "copycat", "budget": 200, "value": 0.72}],
             "detail": "copycat vs none @ 200: 0.7200"},
            {"name": "rounding stops knockoff", "metric": "fidelity", "min": None, "max": 0.3, "passed": False,
             "observed": [{"defence": "rounded:decimals=1", "attack": "knockoff:strategy=random", "budget": 200,
                           "value": 0.47}],
             "detail": "knockoff:strategy=random vs rounded:decimals=1 @ 200: 0.4700"},
        ],
        "cells": {"total": 10, "done": 10},
        "victim": {"kind": "torch", "description": VICTIM, "nb_classes": 10, "input_shape": [1, 28, 28],
                   "test_accuracy": 0.976, "cached": True},
        "thief": {"architecture": "conv3", "arch_params": {"width": 8}, "epochs": 20},
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    store = ResultsStore(run)
    store.append(utility_rows())
    store.append(extraction_rows())
    # A kind this report version does not know (issue: detection) must be skipped, not crash it.
    store.append([{"kind": "detection", "victim": VICTIM, "defence": "none", "attack": "copycat",
                   "budget": 200, "seed": 0, "metric": "detection_rate", "value": 0.9}])
    write_summary(run, full_summary(run))
    return run


T1 = 12.706204736  # scipy.stats.t.ppf(0.975, 1): the 95% t quantile with two seeds


def key_finding(html: str) -> str:
    """The headline's text, markup removed and entities decoded."""
    match = re.search(r'<div class="label">Key finding</div><p>(.*?)</p>', html, re.S)
    assert match, "no key finding"
    return unescape(match.group(1))


def visible_text(html: str) -> str:
    """The page's text as a reader sees it: tags (and their attributes) removed, whitespace collapsed."""
    html = re.sub(r"<svg.*?</svg>", " ", html, flags=re.S)
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", html)))


def external_references(html: str) -> list[str]:
    """Every URL left once the SVG namespace declarations (which are names, not fetched) are removed."""
    stripped = re.sub(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"', "", html)
    return re.findall(r"https?://[^\s\"'<>)]*", stripped)


def test_report_contents(run_dir: Path):
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text(encoding="utf-8")

    assert "Unit-test run" in html
    # copycat vs none at the largest budget: mean ± the 95% t-interval over 2 seeds (n unknown: t alone),
    # t(0.975, 1) · std / sqrt(2) = 12.706 · 0.028 / 1.414
    half = T1 * (0.04 / math.sqrt(2)) / math.sqrt(2)  # sample std of 0.70 and 0.74 is 0.04 / sqrt(2)
    assert f'<span class="fid">0.720</span> <span class="ci">± {half:.3f}</span>' in html
    assert "<svg" in html
    # Headline: copycat is the strongest attack; rounding lowers it by 0.040, well inside the uncertainty
    # of two seeds, so it is a tie, not "the most effective defence".
    headline = key_finding(html)
    assert "the strongest attack, copycat, copies the undefended victim with fidelity 0.720 ±" in headline
    assert "No significant effect on this attack: rounded (decimals 1)." in headline
    assert "most effective" not in headline
    assert "FAIL" in html and "PASS" in html
    assert "rounding stops knockoff" in html
    assert "0.971" in html  # victim accuracy under rounding (utility table)
    assert "detection" in html  # the unknown kind is mentioned, not shown
    assert "&lt;script&gt;" in html and "<script" not in html  # autoescape on, and no scripts at all


def test_report_is_self_contained(run_dir: Path):
    html = build_report(run_dir).read_text(encoding="utf-8")
    for needle in ('src="http', "src='http", 'href="http', "href='http", "@import", "url(http", "<link", "<img"):
        assert needle not in html, needle
    assert external_references(html) == []
    # Inline SVGs must not clash: every id on the page is unique.
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_report_is_a_pure_function_of_the_run_folder(run_dir: Path):
    first = build_report(run_dir).read_bytes()
    assert build_report(run_dir).read_bytes() == first


def test_cli_rebuilds_report(run_dir: Path, capsys):
    path = build_report(run_dir)
    original = path.read_text(encoding="utf-8")
    path.write_text("stale")
    assert main(["report", str(run_dir)]) == 0
    assert path.read_text(encoding="utf-8") == original
    assert str(path) in capsys.readouterr().out


def test_cli_report_on_a_folder_without_summary(tmp_path: Path):
    assert main(["report", str(tmp_path)]) == 2


@pytest.mark.parametrize("csv_text", ["", "kind,victim,defence,attack,budget,seed,metric,value\n", None])
def test_failed_run_renders_with_error(tmp_path: Path, csv_text: str | None):
    if csv_text is not None:
        (tmp_path / "results.csv").write_text(csv_text)
    write_summary(tmp_path, {"scenario_name": "broken", "status": "failed",
                             "error": "RuntimeError: victim weights not found: model.pt"})
    html = build_report(tmp_path).read_text(encoding="utf-8")
    assert "broken" in html
    assert "failed" in html
    assert "RuntimeError: victim weights not found: model.pt" in html
    assert "No results were recorded" in html
    assert "<svg" not in html


def test_partial_run_shows_missing_cells_as_dashes(tmp_path: Path):
    rows = [r for r in extraction_rows() if not (r["attack"] == "copycat" and r["defence"] == "rounded:decimals=1")]
    ResultsStore(tmp_path).append(rows)
    summary = {"status": "partial", "error": "interrupted by the user (resume with --resume)",
               "attacks": ATTACKS, "defences": DEFENCES, "cells": {"total": 10, "done": 3}}
    write_summary(tmp_path, summary)
    html = build_report(tmp_path).read_text(encoding="utf-8")
    assert "partial" in html and "interrupted by the user" in html
    assert '<td class="missing">–</td>' in html
    assert "<svg" in html


def test_number_formatting():
    assert fmt(float("nan")) == "–"
    assert fmt(None) == "–"
    assert fmt(0.12345) == "0.123"
    assert fmt_estimate(estimate("fidelity", 0.5, float("nan"), 1, None)) == "0.500"  # n unknown: no interval
    assert fmt_estimate(estimate("r_test", 0.5, float("nan"), 1, 1000)) == "0.500"  # not a proportion
    # several seeds: mean ± the t-interval (t = 12.706 with 1 degree of freedom)
    assert fmt_estimate(estimate("kl", 0.5, 0.01, 2, None)) == f"0.500 ± {12.7062 * 0.01 / math.sqrt(2):.3f}"


# ---------------------------------------------------------------- detection track and active defences

DETECTORS = {"msp": {"plugin": "msp", "fit_seconds": 0.0, "from_cache": False, "per_client": False,
                     "replaces_victim": False},
             "same": {"plugin": "same", "fit_seconds": 42.0, "from_cache": True, "per_client": False,
                      "replaces_victim": False},
             "same_x": {"plugin": "same_x", "fit_seconds": 40.0, "from_cache": False, "per_client": False,
                        "replaces_victim": False},
             "oe": {"plugin": "oe", "fit_seconds": 75.0, "from_cache": False, "per_client": False,
                    "replaces_victim": True},
             "prada": {"plugin": "prada", "fit_seconds": None, "from_cache": False, "per_client": True,
                       "replaces_victim": False}}
DET_BUDGETS = [100, 200]
# (auroc, aupr, fpr@95) per detector × attack at the largest detection budget.
DET_TOP = {("msp", "copycat"): (0.612, 0.598, 0.871), ("msp", "knockoff:strategy=random"): (0.503, 0.51, 0.95),
           ("same", "copycat"): (0.934, 0.921, 0.233), ("same", "knockoff:strategy=random"): (0.556, 0.55, 0.9),
           ("same_x", "copycat"): (0.889, 0.87, 0.41), ("same_x", "knockoff:strategy=random"): (0.52, 0.5, 0.93),
           ("oe", "copycat"): (0.777, 0.75, 0.6), ("oe", "knockoff:strategy=random"): (0.581, 0.57, 0.88)}
ACTIVE_DEFENCES = {**DEFENCES, "reject": "reject"}


def detection_rows() -> list[dict]:
    rows = []

    def add(kind, detector, attack, budget, metric, value):
        rows.append({"kind": kind, "victim": VICTIM, "defence": detector, "attack": attack, "budget": budget,
                     "seed": 0 if kind == "detection" else "", "metric": metric, "value": value})

    for (det, attack), (auroc, aupr, fpr95) in DET_TOP.items():
        for budget in DET_BUDGETS:
            shift = 0.0 if budget == DET_BUDGETS[-1] else -0.05  # the smaller budget detects a bit less
            metrics = {"auroc": auroc + shift, "aupr": aupr + shift, "fpr_at_95_tpr": fpr95, "fpr_at_90_tpr": 0.5,
                       "tpr_at_1_fpr": 0.02, "auroc@0.1": auroc + shift - 0.01, "aupr@0.1": 0.123,
                       "auroc@0.9": auroc + shift, "aupr@0.9": 0.987}
            for m, v in metrics.items():
                add("detection", det, attack, budget, m, v)
    for attack, (one, q1, many, qn) in {"copycat": (1.0, 57.0, 0.25, float("nan")),
                                        "knockoff:strategy=random": (0.0, float("nan"), 0.0, float("nan"))}.items():
        for budget in DET_BUDGETS:
            add("detection", "prada", attack, budget, "benign_flagged", 1.0 if attack == "copycat" else 0.0)
            add("detection", "prada", attack, budget, "clients_flagged", one)
            add("detection", "prada", attack, budget, "queries_to_flag", q1)
            add("detection", "prada", attack, budget, "clients_flagged@4_clients", many)
            add("detection", "prada", attack, budget, "queries_to_flag@4_clients", qn)
    costs = {"msp": (0.0, 0.0021, 0.0021, 1.0, 0.976), "same": (42.0, 0.0525, 0.0021, 25.0, 0.976),
             "same_x": (40.0, 0.05, 0.0021, 23.81, 0.976), "oe": (75.0, 0.0022, 0.0021, 1.05, 0.9612)}
    for det, values in costs.items():
        for m, v in zip(["fit_seconds", "score_ms_per_query", "victim_ms_per_query", "score_cost_ratio",
                         "served_accuracy"], values):
            add("detector", det, "", "", m, v)
    add("detector", "prada", "", "", "fit_seconds", float("nan"))
    add("detector", "prada", "", "", "served_accuracy", 0.976)
    return rows


def service_rows() -> list[dict]:
    """Utility rows for the reject defence, and answered share / latency of every cell (as the runner writes)."""
    rows = [{"kind": "utility", "victim": VICTIM, "defence": "reject", "metric": m, "value": v}
            for m, v in {"victim_accuracy": 0.9, "output_distortion": 0.1, "label_change_rate": 0.08}.items()]
    honest = {"none": (1.0, 0.031, 0.052), "rounded:decimals=1": (1.0, 0.033, 0.055), "reject": (0.913, 0.044, 0.071)}
    rows += [{"kind": "utility", "victim": VICTIM, "defence": d, "metric": m, "value": v}
             for d, vals in honest.items() for m, v in zip(["answered_share", "latency_mean_ms", "latency_p95_ms"], vals)]
    for (defence, attack, budget), fid in FIDELITY.items():
        for seed in SEEDS:
            rows += [{"kind": "extraction", "victim": VICTIM, "defence": defence, "attack": attack, "budget": budget,
                      "seed": seed, "metric": m, "value": v}
                     for m, v in {"answered_share": 1.0, "latency_mean_ms": 0.02, "latency_p95_ms": 0.04}.items()]
    for attack in ATTACKS:
        for budget in BUDGETS:
            for seed in SEEDS:
                metrics = {"fidelity": 0.3, "accuracy": 0.28, "answered_share": 0.25, "latency_mean_ms": 0.061,
                           "latency_p95_ms": 0.09}
                if attack == "copycat":  # an attack-specific metric only this attack reports
                    metrics["param_max_abs_error"] = 0.0123
                rows += [{"kind": "extraction", "victim": VICTIM, "defence": "reject", "attack": attack,
                          "budget": budget, "seed": seed, "metric": m, "value": v} for m, v in metrics.items()]
    return rows


@pytest.fixture
def detection_run_dir(tmp_path: Path) -> Path:
    import numpy as np

    run = tmp_path / "run"
    run.mkdir()
    store = ResultsStore(run)
    store.append(utility_rows())
    store.append(extraction_rows())
    store.append(service_rows())
    store.append(detection_rows())
    scores = run / "detection"
    scores.mkdir()
    rng = np.random.default_rng(0)
    for det, attack in DET_TOP:
        for budget in DET_BUDGETS:
            shift = 2.0 if (det, attack) == ("same", "copycat") else 0.3
            np.savez_compressed(scores / f"{det}__{attack}__{budget}.npz", benign=rng.normal(size=60),
                                attack=rng.normal(shift, size=budget))
    summary = full_summary(run)
    summary["defences"] = ACTIVE_DEFENCES
    summary["detectors"] = DETECTORS
    summary["detection"] = {"benign": "test (evaluation)", "benign_samples": 60, "calibration_samples": 60,
                            "outliers": "outliers", "budgets": DET_BUDGETS, "malicious_ratio": 0.5,
                            "ratio_sweep": [0.1, 0.9], "prada_clients": [1, 4], "attacks": None}
    write_summary(run, summary)
    return run


def section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert match, section_id
    return match.group(1)


def test_report_detection_sections(detection_run_dir: Path):
    html = build_report(detection_run_dir).read_text(encoding="utf-8")
    det = section(html, "detection")
    # 1. ROC curves from the saved scores, one panel per attack, one line per score-based detector.
    assert "ROC curves at 200 attack queries" in det
    assert 'aria-label="fig-roc"' in det
    # 2. Comparison tables, one per detection budget, in percent; the best per column highlighted.
    assert "Detector comparison at 100 attack queries" in det and "Detector comparison at 200 attack queries" in det
    assert '<td class="num gstart best">93.4</td>' in det  # SAME's AUROC against copycat: the best
    assert '<td class="num best">23.3</td>' in det  # SAME's FPR@95%TPR against copycat: the lowest
    assert "61.2" in det and "88.4" in det  # msp at 200, same at 100 (93.4 - 5)
    # 3. Detector cost.
    assert "Detector cost" in det
    assert "25.00×" in det and "0.0525" in det and "42.0 s (cached)" in det and "1 min 15 s" in det
    assert "replaces victim" in det and "0.961" in det
    # 4. Malicious-ratio sweep.
    assert "10% attack" in det and "90% attack" in det and "12.3" in det and "98.7" in det
    assert "50% attack" in det  # the headline ratio, for reference
    # 5. SAME ablation (same and same_x present).
    ablation = det[det.index('id="detection-ablation"'):]
    assert "SAME-X (input only)" in ablation and "SAME (input and label)" in ablation
    # 6. PRADA per client.
    clients = det[det.index('id="detection-clients"'):det.index('id="detection-cost"')]
    assert "4 clients" in clients and "never" in clients and ">57<" in clients and ">25<" in clients
    assert 'class="flag-bad">yes' in clients
    # 7. Active defences: honest users vs attacker behind reject.
    active = section(html, "active")
    reject = active[active.index("reject"):]
    assert '<td class="num gstart">91.3</td><td class="num">0.0440</td><td class="num">0.0710</td>' in reject
    # the attacker: a quarter of its queries answered, slower, and a poor copy
    assert '<td class="num gstart">25.0</td><td class="num">0.0610</td><td class="num">0.300 ± 0.000</td>' in reject
    assert '<td class="num gstart">100.0</td><td class="num">0.0310</td>' in active  # honest users, no defence
    # Nav links, and the detection kinds are no longer listed as "not shown".
    assert 'href="#detection"' in html and 'href="#active"' in html
    assert "“detection” row" not in html and "“detector” row" not in html
    # Attack-specific extraction metrics appear in the full table without breaking it.
    assert "max parameter error" in html and "0.012" in html
    # Still self-contained with unique ids.
    assert external_references(html) == []
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    assert build_report(detection_run_dir).read_text(encoding="utf-8") == html  # deterministic


def test_report_detection_without_score_files(detection_run_dir: Path):
    import shutil

    shutil.rmtree(detection_run_dir / "detection")
    html = build_report(detection_run_dir).read_text(encoding="utf-8")
    det = section(html, "detection")
    assert "fig-roc" not in det and "Detector comparison at 200 attack queries" in det


def test_report_without_detection_has_no_detection_sections(run_dir: Path):
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert 'id="detection"' not in html and 'href="#detection"' not in html
    assert 'id="active"' not in html  # no active defence, every query answered
    assert "fig-roc" not in html
    # The unknown detection metric of this run is still reported as not shown.
    assert "“detection” row" in html


# ---------------------------------------------------------------- issue 13 §5: a report an auditor can trust


def one_seed_run(tmp_path: Path, fidelity: dict[str, dict[str, float]], *, test_samples: int | None = 1000,
                 budget: int = 1500) -> Path:
    """A one-seed run folder: ``fidelity[attack][defence]`` at one budget; n = ``test_samples`` (None: not recorded)."""
    run = tmp_path / "one_seed"
    run.mkdir()
    defences = {d: d.split(":")[0] for d in next(iter(fidelity.values()))}
    rows = [{"kind": "extraction", "victim": VICTIM, "defence": d, "attack": a, "budget": budget, "seed": 0,
             "metric": m, "value": v}
            for a, per_defence in fidelity.items() for d, f in per_defence.items()
            for m, v in {"fidelity": f, "accuracy": f - 0.01, "attack_seconds": 0.31}.items()]
    ResultsStore(run).append(rows)
    victim = {"description": VICTIM, "test_accuracy": 0.976}
    if test_samples is not None:
        victim["test_samples"] = test_samples
    write_summary(run, {"scenario_name": "one_seed", "status": "complete", "seeds": [0], "budgets": [budget],
                        "attacks": {a: a.split(":")[0] for a in fidelity}, "defences": defences, "victim": victim,
                        "platform": {"system": "Linux", "cpus": 2}})
    return run


def test_wilson_interval_matches_the_textbook_and_scipy():
    import scipy.stats

    # 90 successes out of 100: the classic worked example, 95% Wilson interval [0.8256, 0.9448].
    lo, hi = wilson_interval(0.9, 100)
    assert lo == pytest.approx(0.82563, abs=1e-5) and hi == pytest.approx(0.94477, abs=1e-5)
    for k, n in [(0, 50), (50, 50), (1, 1000), (738, 1000), (3, 7)]:
        ci = scipy.stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(k / n, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_intervals_over_seeds_are_t_intervals_never_narrower_than_wilson():
    # two seeds that disagree: the t-interval dominates
    e = estimate("fidelity", 0.72, 0.04 / math.sqrt(2), 2, 1000)
    assert e.high - e.mean == pytest.approx(T1 * 0.02, abs=1e-9) and e.method == "t"
    # two seeds that agree exactly: the test set's own (Wilson) uncertainty remains
    e = estimate("fidelity", 0.5, 0.0, 2, 1000)
    lo, hi = wilson_interval(0.5, 1000)
    assert e.low == pytest.approx(lo) and e.high == pytest.approx(hi)
    # a share never leaves [0, 1]
    e = estimate("fidelity", 0.98, 0.02, 2, 1000)
    assert e.high == 1.0 and fmt_estimate(e).startswith("0.980 ± ")
    # one seed without n: no interval, so nothing can be compared
    assert not estimate("fidelity", 0.5, math.nan, 1, None).has_interval
    assert compare(estimate("fidelity", 0.1, math.nan, 1, None), estimate("fidelity", 0.9, math.nan, 1, 1000)) is None


def test_summary_grid_and_full_table_show_wilson_intervals_and_n(tmp_path: Path):
    run = one_seed_run(tmp_path, {"copycat": {"none": 0.9, "rounded:decimals=1": 0.89}}, test_samples=100)
    html = build_report(run).read_text(encoding="utf-8")
    summary = section(html, "summary")
    assert '<span class="fid">0.900</span> <span class="ci">[0.826, 0.945]</span>' in summary
    assert "n = 100" in summary
    assert "Test samples (n)</dt><dd>100</dd>" in html
    results = section(html, "results")
    assert '0.900 <span class="ci-line">[0.826, 0.945]</span>' in results
    assert "95% Wilson interval of the proportion over n = 100 test samples" in results


def test_key_finding_names_a_significant_defence_against_the_same_attack(tmp_path: Path):
    run = one_seed_run(tmp_path, {
        "knockoff:strategy=adaptive,reward=cert": {"none": 0.76, "reverse_sigmoid:beta=1.0,gamma=0.2": 0.27,
                                                   "rounded:decimals=1": 0.75},
        # copycat is weaker undefended but the strongest behind reverse_sigmoid: the old headline compared
        # copycat-behind-the-defence with knockoff undefended
        "copycat": {"none": 0.68, "reverse_sigmoid:beta=1.0,gamma=0.2": 0.67, "rounded:decimals=1": 0.68},
    })
    html = build_report(run).read_text(encoding="utf-8")
    headline = key_finding(html)
    lo, hi = wilson_interval(0.76, 1000)
    assert (f"At 1,500 queries, the strongest attack, knockoff (adaptive, cert), copies the undefended victim "
            f"with fidelity 0.760 [{lo:.3f}, {hi:.3f}] (n = 1,000).") in headline
    assert ("Against the same attack and budget, the most effective defence, reverse_sigmoid (beta 1.0, gamma 0.2), "
            "lowers fidelity to 0.270 [") in headline
    assert "(-0.490, beyond the uncertainty)" in headline
    assert "No significant effect on this attack: rounded (decimals 1)." in headline
    assert "But reverse_sigmoid (beta 1.0, gamma 0.2) has no significant effect on copycat." in headline
    assert "0.670" not in headline  # never copycat-behind-the-defence against knockoff undefended
    # The grid marks that one cell, and says which differences are within the uncertainty.
    summary = section(html, "summary")
    assert summary.count('class="matrix best"') == 1
    best = summary[summary.index('class="matrix best"'):]
    assert best.startswith('class="matrix best"><span class="fid">0.270</span>')
    assert "-0.490 vs baseline, significant" in summary
    assert "-0.010 vs baseline: no significant effect" in summary


def test_ties_are_never_the_most_effective_defence(tmp_path: Path):
    # Two defences both lower fidelity significantly, but their intervals overlap: a tie.
    run = one_seed_run(tmp_path, {"copycat": {"none": 0.80, "rounded:decimals=1": 0.50, "label_only": 0.52}})
    html = build_report(run).read_text(encoding="utf-8")
    headline = key_finding(html)
    assert "most effective defence" not in headline
    assert "rounded (decimals 1) and label_only lower fidelity beyond the uncertainty" in headline
    assert "none is clearly the most effective" in headline
    assert 'class="matrix best"' not in section(html, "summary")


def test_no_defence_better_than_baseline_is_no_significant_effect(tmp_path: Path):
    # Every defence ties with the baseline (one of them even reaches the same value): nothing is highlighted,
    # least of all the baseline itself.
    run = one_seed_run(tmp_path, {"copycat": {"none": 0.70, "rounded:decimals=1": 0.70, "label_only": 0.69}})
    html = build_report(run).read_text(encoding="utf-8")
    assert key_finding(html).endswith("No significant effect on this attack: rounded (decimals 1) and label_only.")
    summary = section(html, "summary")
    assert 'class="matrix best"' not in summary
    assert summary.count("no significant effect") == 2


def test_unknown_test_size_degrades_to_no_interval(tmp_path: Path):
    run = one_seed_run(tmp_path, {"copycat": {"none": 0.80, "rounded:decimals=1": 0.20}}, test_samples=None)
    html = build_report(run).read_text(encoding="utf-8")
    assert "Test samples (n)</dt><dd>n unknown</dd>" in html
    headline = key_finding(html)
    assert "(n unknown)" in headline and "no difference can be called significant" in headline
    assert "most effective" not in headline
    summary = section(html, "summary")
    assert 'class="ci"' not in summary and 'class="matrix best"' not in summary
    assert "(uncertainty unknown)" in summary
    assert "no interval can be given" in summary


def test_budget_curves_draw_the_interval_band(tmp_path: Path):
    run = one_seed_run(tmp_path, {"copycat": {"none": 0.80, "rounded:decimals=1": 0.20}})
    curves = section(build_report(run).read_text(encoding="utf-8"), "curves")
    fidelity_svg = curves[curves.index('aria-label="fig-fidelity"'):curves.index("</svg>")]
    assert "fill-opacity: 0.13" in fidelity_svg  # fill_between bands
    assert "95% interval of each point" in curves


def test_labels_replace_raw_ids_everywhere_shown(detection_run_dir: Path):
    assert config_label("knockoff:strategy=adaptive,reward=cert") == "knockoff (adaptive, cert)"
    assert config_label("reverse_sigmoid:beta=1.0,gamma=0.2") == "reverse_sigmoid (beta 1.0, gamma 0.2)"
    assert config_label("copycat") == "copycat" and config_label("eqsolve-basis") == "eqsolve-basis"
    assert config_label("x:sizes=[1, 2],mode=fast") == "x (sizes [1, 2], fast)"
    assert (relabel("knockoff:strategy=random vs rounded:decimals=1 @ 200: 0.47",
                    ["knockoff:strategy=random", "rounded:decimals=1"])
            == "knockoff (random) vs rounded (decimals 1) @ 200: 0.47")
    html = build_report(detection_run_dir).read_text(encoding="utf-8")
    shown = visible_text(html[:html.index('<section id="provenance">')])
    assert "strategy=" not in shown and "decimals=" not in shown
    assert "knockoff (random)" in shown and "rounded (decimals 1)" in shown
    assert 'title="knockoff:strategy=random"' in html  # the raw id stays one hover away
    figures = " ".join(re.findall(r"<svg.*?</svg>", html, re.S))
    assert "strategy=" not in figures and "knockoff (random)" in figures
    provenance = section(html, "provenance")
    assert "<code>knockoff:strategy=random</code>" in provenance  # the exact id is kept for the record


def test_attack_without_parameters_is_spaced_from_its_budget(run_dir: Path):
    text = visible_text(build_report(run_dir).read_text(encoding="utf-8"))
    assert "copycatat" not in text
    assert "copycat at 200 queries" in text and "knockoff (random) at 200 queries" in text


def test_glossary_lists_each_metric_once(detection_run_dir: Path):
    html = build_report(detection_run_dir).read_text(encoding="utf-8")
    glossary = html[html.index('<dl class="glossary">'):html.index("</dl>", html.index('<dl class="glossary">'))]
    terms = re.findall(r"<dt>(.*?)</dt>", glossary)
    assert len(terms) == len(set(terms))
    assert terms.count("answered share") == 1 and terms.count("mean latency (ms)") == 1
    assert terms.count("p95 latency (ms)") == 1


def test_full_results_table_wraps_and_scrolls_instead_of_being_cut(run_dir: Path):
    results = section(build_report(run_dir).read_text(encoding="utf-8"), "results")
    assert '<div class="inner scroll">\n    <table class="data dense wrap">' in results


def test_budget_panels_have_their_own_numeric_axes():
    # Tramèr-style attacks with budgets of their own: each panel is ticked at its attack's budgets only.
    curves = {"eqsolve": {"none": [(31, 1.0, 0.9, 1.0), (62, 1.0, 0.9, 1.0)]},
              "lowd-meek": {"none": [(200, 0.8, 0.7, 0.9), (651, 0.9, 0.8, 1.0)]}}
    svg = plots.budget_curves_svg(curves, metric_label="fidelity", colours={"none": "#222222"}, baseline="none",
                                  prefix="t")
    ticks = re.findall(r">(\d[\d,]*)<", svg)
    assert ticks == ["31", "62", "200", "651"]  # not 31, 62, 200, 651 on both panels


def test_baseline_line_is_drawn_on_top():
    curves = {"copycat": {"none": [(100, 0.5, 0.4, 0.6), (200, 0.6, 0.5, 0.7)],
                          "rounded": [(100, 0.5, 0.4, 0.6), (200, 0.6, 0.5, 0.7)]}}
    svg = plots.budget_curves_svg(curves, metric_label="fidelity", colours={"none": "#222222", "rounded": "#0072B2"},
                                  baseline="none", prefix="t")
    # SVG paints in document order: the baseline's dashed line comes after (above) the defence's line,
    # although the baseline was drawn first.
    dashed = svg.index("stroke-dasharray")
    assert svg.index("stroke: #222222", dashed) > svg.index("stroke: #0072b2; stroke-width: 1.8")


def test_durations_keep_sub_second_precision(detection_run_dir: Path):
    assert fmt_duration(0.31) == "0.31 s"
    assert fmt_duration(0.001) == "< 0.01 s" and fmt_duration(0.0) == "< 0.01 s"
    assert fmt_duration(4.5) == "4.50 s" and fmt_duration(42.0) == "42.0 s" and fmt_duration(75) == "1 min 15 s"
    html = build_report(detection_run_dir).read_text(encoding="utf-8")
    assert not re.search(r"(?<![\d.])0\.0 s", visible_text(html))  # '40.0 s' is fine, '0.0 s' hides a cost
    assert "&lt; 0.01 s" in section(html, "detection")  # msp trains in no time (escaped "<")
    assert "<td class=\"num\">4.50 s</td>" in section(html, "curves")  # at 200 queries: 200/50 s + seed, mean 4.5


def test_timings_carry_a_machine_note(detection_run_dir: Path):
    html = build_report(detection_run_dir).read_text(encoding="utf-8")
    note = "Timings depend on the machine and on its load"
    curves = section(html, "curves")
    figure = curves[curves.index("Attack wall time, at 200 queries"):]
    assert note in figure[:figure.index("</figure>")]
    assert "Measured on: Linux, 2 CPUs." in figure
    for section_id in ("detection", "active"):
        assert note in section(html, section_id), section_id


def test_auroc_below_chance_is_called_inverted(detection_run_dir: Path):
    html = build_report(detection_run_dir).read_text(encoding="utf-8")
    det = section(html, "detection")
    # msp against knockoff at 100 queries: AUROC 45.3, below chance
    comparison = det[det.index("Detector comparison at 100 attack queries"):
                     det.index("Detector comparison at 200 attack queries")]
    assert re.search(r">45\.3 <span class=\"inverted\" title=\"[^\"]+\">below chance: inverted</span>", comparison)
    # an AUROC above 50 gets no note, and AUPR is never called inverted
    assert ">50.3 <span" not in det and ">46.0 <span" not in det  # msp/knockoff AUROC at 200; AUPR at 100


def test_fusion_signals_are_shown_when_recorded(detection_run_dir: Path):
    summary = read_summary(detection_run_dir)
    summary["detectors"]["fusion"] = {"plugin": "fusion", "fit_seconds": 3.0, "from_cache": False,
                                      "per_client": False, "replaces_victim": False,
                                      "signals": ["pixel_density", "intensity_knn", "energy"],
                                      "signals_dropped": {"feature_knn": "no nn.Linear head"}}
    summary["detectors"]["fusion_old"] = {"plugin": "fusion", "fit_seconds": 3.0, "from_cache": False,
                                          "per_client": False, "replaces_victim": False}
    write_summary(detection_run_dir, summary)
    det = section(build_report(detection_run_dir).read_text(encoding="utf-8"), "detection")
    signals = det[det.index('id="detection-signals"'):]
    assert "<td>pixel_density, intensity_knn, energy</td><td>feature_knn (no nn.Linear head)</td>" in signals
    assert "not recorded by this run" in signals  # fusion_old: a run that did not record its signals


def test_no_fusion_no_signals_table(detection_run_dir: Path):
    assert 'id="detection-signals"' not in build_report(detection_run_dir).read_text(encoding="utf-8")


def test_query_budgets_fact_lists_every_measured_budget(tmp_path: Path):
    # Attacks with budgets of their own (Tramèr): the scenario's default budgets alone would say "31".
    run = one_seed_run(tmp_path, {"copycat": {"none": 0.8}}, budget=651)
    summary = read_summary(run)
    summary["budgets"] = [31]
    write_summary(run, summary)
    assert "Query budgets</dt><dd>651</dd>" in build_report(run).read_text(encoding="utf-8")


def test_without_a_baseline_no_defence_is_judged(tmp_path: Path):
    run = one_seed_run(tmp_path, {"copycat": {"rounded:decimals=1": 0.8, "label_only": 0.3}})
    headline = key_finding(build_report(run).read_text(encoding="utf-8"))
    assert headline.startswith("At 1,500 queries, the closest copy comes from copycat behind rounded (decimals 1)")
    assert "no undefended baseline" in headline and "most effective" not in headline


def test_a_remote_victims_baseline_is_the_victim_as_its_endpoint_serves_it(tmp_path: Path):
    # Through an endpoint, defence 'none' adds nothing on this side: the endpoint's own defence is measured.
    run = one_seed_run(tmp_path, {"copycat": {"none": 0.73}})
    summary = json.loads((run / "summary.json").read_text())
    summary["victim"].update({"kind": "remote", "endpoint": {"parameters": {"defence": "reverse_sigmoid:beta=1.0"}}})
    (run / "summary.json").write_text(json.dumps(summary))
    html = build_report(run).read_text(encoding="utf-8")
    assert ("copies the victim as its endpoint serves it (behind its own defence: reverse_sigmoid:beta=1.0)"
            in key_finding(html))
    assert "undefended victim" not in key_finding(html)
    assert "Endpoint&#39;s defence</dt><dd>reverse_sigmoid:beta=1.0</dd>" in html
