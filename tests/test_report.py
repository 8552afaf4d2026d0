"""The HTML report: built from a hand-written run folder, no model training."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from stealcheck.cli import main
from stealcheck.reports import build_report
from stealcheck.reports.html import fmt, fmt_mean_std
from stealcheck.results import ResultsStore, write_summary

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


def external_references(html: str) -> list[str]:
    """Every URL left once the SVG namespace declarations (which are names, not fetched) are removed."""
    stripped = re.sub(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"', "", html)
    return re.findall(r"https?://[^\s\"'<>)]*", stripped)


def test_report_contents(run_dir: Path):
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text(encoding="utf-8")

    assert "Unit-test run" in html
    assert "0.720 ± 0.028" in html  # copycat vs none at the largest budget, mean ± std over 2 seeds
    assert f"{(0.45 + 0.49) / 2:.3f} ± {math.sqrt(2) * 0.02:.3f}" in html  # knockoff vs rounded: the best cell
    assert "<svg" in html
    # Headline: copycat is the strongest attack against both defences; rounding lowers it by 0.040.
    assert "the most effective defence, rounded:decimals=1, holds its strongest attack (copycat) to 0.680" in html
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
    assert fmt_mean_std(0.5, float("nan"), 1) == "0.500"
    assert fmt_mean_std(0.5, 0.01, 1) == "0.500"  # one seed: no spread to show
    assert fmt_mean_std(0.5, 0.01, 2) == "0.500 ± 0.010"
