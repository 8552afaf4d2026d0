"""The ownership section of the report, and the figures benchmarks print: pure functions of results.csv.

- the matrix of suspects x schemes (verdict and p-value);
- each scheme's detection rate against the copy's fidelity (does the mark survive once the copy is good?);
- the false-positive rate on the independent models;
- each scheme's cost to honest users;
- the false claims' success, with and without the mitigations;
- the goal: one scheme that flags every copy of fidelity >= 0.8 (TPR >= 0.95), with FPR <= 0.01 on the
  independent models and a cost of at most 0.5 accuracy points.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

#: The issue's goal: thresholds of the best scheme.
GOAL = {"min_fidelity": 0.8, "tpr": 0.95, "fpr": 0.01, "cost": 0.005}
FIDELITY_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0001)
MITIGATIONS = ("none", "commitment", "verifier_generated")


def ownership_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The ownership rows of results.csv, with text columns filled and numbers parsed."""
    if "scheme" not in frame.columns or frame.empty:
        return pd.DataFrame(columns=["kind", "defence", "attack", "budget", "seed", "metric", "value", "scheme"])
    own = frame[frame["kind"] == "ownership"].copy()
    for col in ("defence", "attack", "scheme", "metric"):
        own[col] = own[col].fillna("").astype(str)
    for col in ("budget", "seed", "value"):
        own[col] = pd.to_numeric(own[col], errors="coerce")
    return own


def _wide(own: pd.DataFrame) -> pd.DataFrame:
    """One row per scheme x suspect (defence, attack, budget, seed), one column per metric."""
    if own.empty:
        return pd.DataFrame()
    keys = ["scheme", "defence", "attack", "budget", "seed"]
    filled = own.assign(budget=own["budget"].fillna(-1), seed=own["seed"].fillna(-1))
    wide = filled.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    wide["budget"] = wide["budget"].where(wide["budget"] >= 0)
    wide["seed"] = wide["seed"].where(wide["seed"] >= 0)
    return wide


def suspect_group(attack: str) -> str:
    if attack == "victim":
        return "victim"
    if attack.startswith("independent:"):
        return "independent"
    if attack.startswith("false_claim"):
        return "false_claim"
    return "copy" if attack else "cost"


def scheme_summary(frame: pd.DataFrame, schemes: list[str] | None = None) -> list[dict[str, Any]]:
    """Per scheme: TPR on copies (all, and with fidelity >= 0.8; per attack), FPR on independent models,
    the victim's verdict, the cost, the false claims' success per mitigation, and whether the goal holds."""
    own = ownership_rows(frame)
    wide = _wide(own)
    if wide.empty:
        return []
    wide["group"] = [suspect_group(a) for a in wide["attack"]]
    out = []
    for scheme in schemes or list(dict.fromkeys(wide["scheme"])):
        w = wide[wide["scheme"] == scheme]
        copies = w[w["group"] == "copy"]
        good = copies[copies.get("copy_fidelity", pd.Series(dtype=float)) >= GOAL["min_fidelity"]] \
            if "copy_fidelity" in copies else copies.iloc[0:0]
        indep = w[w["group"] == "independent"]
        victim = w[w["group"] == "victim"]
        cost = w[w["group"] == "cost"]
        claims = w[(w["attack"] == "false_claim")]
        per_attack = {}
        for attack, rows in copies.groupby("attack", sort=False):
            hi = rows[rows["copy_fidelity"] >= GOAL["min_fidelity"]] if "copy_fidelity" in rows else rows.iloc[0:0]
            per_attack[attack] = {"copies": len(rows), "detected": _mean(rows, "detected"),
                                  "good_copies": len(hi), "good_detected": _mean(hi, "detected"),
                                  "best_fidelity": float(rows["copy_fidelity"].max()) if "copy_fidelity" in rows
                                  else math.nan}
        entry = {
            "scheme": scheme,
            "copies": len(copies), "tpr": _mean(copies, "detected"),
            "good_copies": len(good), "tpr_good": _mean(good, "detected"),
            "independent_tests": len(indep), "fpr": _mean(indep, "detected"),
            "victim_detected": _mean(victim, "detected"), "victim_p": _first(victim, "p_value"),
            "accuracy_before": _first(cost, "accuracy_before"), "accuracy_after": _first(cost, "accuracy_after"),
            "cost": _first(cost, "accuracy_cost"),
            "false_claims": {m: _first(claims[claims["defence"] == m], "false_claim_success") for m in MITIGATIONS},
            "per_attack": per_attack,
        }
        entry["goal_met"] = bool(entry["good_copies"] > 0 and entry["tpr_good"] >= GOAL["tpr"]
                                 and entry["independent_tests"] > 0 and entry["fpr"] <= GOAL["fpr"]
                                 and np.isfinite(entry["cost"]) and entry["cost"] <= GOAL["cost"])
        out.append(entry)
    return out


def _mean(rows: pd.DataFrame, metric: str) -> float:
    if metric not in rows or rows[metric].dropna().empty:
        return math.nan
    return float(rows[metric].dropna().mean())


def _first(rows: pd.DataFrame, metric: str) -> float:
    if metric not in rows or rows[metric].dropna().empty:
        return math.nan
    return float(rows[metric].dropna().iloc[0])


def goal_line(summaries: list[dict[str, Any]], attacks: list[str] | None = None) -> str:
    """One line: which scheme meets the goal, or the best one and what it misses."""
    if not summaries:
        return "GOAL: no ownership results"
    head = (f"GOAL (TPR >= {GOAL['tpr']:.2f} on copies with fidelity >= {GOAL['min_fidelity']}, FPR <= "
            f"{GOAL['fpr']:.2f} on independent models, cost <= {100 * GOAL['cost']:.1f} accuracy points)")
    missing = []
    if attacks:
        for a in attacks:
            best = max((s["per_attack"].get(a, {}).get("best_fidelity", math.nan) for s in summaries),
                       key=lambda v: -1 if not np.isfinite(v) else v)
            if not (np.isfinite(best) and best >= GOAL["min_fidelity"]):
                missing.append(f"{a} (best copy fidelity {_pct(best)})")
    met = [s for s in summaries if s["goal_met"]]

    def ranking(s: dict) -> tuple:
        return (s["goal_met"], _num(s["tpr_good"]) if _num(s["fpr"]) <= GOAL["fpr"] else -1, -_num(s["fpr"]),
                _num(s["victim_detected"]), -_num(s["cost"]))

    best = max(summaries, key=ranking)
    text = (f"{best['scheme']}: TPR {_pct(best['tpr_good'])} on {best['good_copies']} copies with fidelity >= "
            f"{GOAL['min_fidelity']}, FPR {_pct(best['fpr'])} on {best['independent_tests']} independent tests, cost "
            f"{_points(best['cost'])}")
    note = f"; no copy reached fidelity {GOAL['min_fidelity']} for {', '.join(missing)}" if missing else ""
    if met:
        return f"{head}: MET by {', '.join(s['scheme'] for s in met)}. Best {text}{note}"
    return f"{head}: NOT MET. Best {text}{note}"


def _num(v: float) -> float:
    return v if np.isfinite(v) else -1.0


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%" if np.isfinite(v) else "n/a"


def _points(v: float) -> str:
    return f"{100 * v:+.2f} points" if np.isfinite(v) else "n/a"


def fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def matrix(frame: pd.DataFrame) -> dict[str, Any] | None:
    """Suspects x schemes: each cell the verdict (copy / independent) and the p-value."""
    wide = _wide(ownership_rows(frame))
    if wide.empty:
        return None
    wide["group"] = [suspect_group(a) for a in wide["attack"]]
    schemes = list(dict.fromkeys(wide["scheme"]))
    suspects = wide[wide["group"].isin(["copy", "independent", "victim"])].copy()
    # An independent model or the victim is one suspect whatever client's marks it was tested against (DAWN)
    other = suspects["group"] != "copy"
    suspects.loc[other, "defence"] = ""
    suspects.loc[other, ["budget", "seed"]] = np.nan
    order = {"copy": 0, "independent": 1, "victim": 2}
    keys = (suspects[["group", "attack", "defence", "budget", "seed"]].drop_duplicates()
            .assign(o=lambda d: d["group"].map(order)).sort_values(["o", "attack", "budget", "seed", "defence"],
                                                                   kind="stable"))
    rows = []
    for _, k in keys.iterrows():
        cells = []
        fidelity = math.nan
        for s in schemes:
            hit = suspects[(suspects["scheme"] == s) & (suspects["attack"] == k["attack"])
                           & (suspects["defence"] == k["defence"])
                           & _same(suspects["budget"], k["budget"]) & _same(suspects["seed"], k["seed"])]
            if hit.empty:
                cells.append({"text": "–", "flag": None})
                continue
            det = hit["detected"].mean() if "detected" in hit else math.nan
            p = hit["p_value"].min() if "p_value" in hit else math.nan  # DAWN: one test per client's marks
            if "copy_fidelity" in hit and np.isfinite(hit["copy_fidelity"].iloc[0]):
                fidelity = float(hit["copy_fidelity"].iloc[0])
            tests = len(hit)
            verdict = ("copy" if det == 1 else "independent" if det == 0 else f"copy in {det * tests:.0f}/{tests}")
            cells.append({"text": f"{verdict} (p {fmt_p(p)})", "flag": bool(det > 0)})
        label = k["attack"] if k["group"] != "copy" else (
            f"{k['attack']} @ {int(k['budget'])}" + (f" vs {k['defence']}" if k["defence"] not in ("", "none") else "")
            + (f" seed {int(k['seed'])}" if np.isfinite(k["seed"]) and k["seed"] else ""))
        rows.append({"suspect": label, "group": k["group"], "fidelity": fidelity, "cells": cells})
    return {"schemes": schemes, "rows": rows}


def _same(col: pd.Series, value: Any) -> pd.Series:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return col.isna()
    return col == value


def detection_by_fidelity(frame: pd.DataFrame) -> dict[str, list[tuple[str, int, float]]]:
    """Per scheme: (fidelity bin, copies, detection rate) over the stolen copies."""
    wide = _wide(ownership_rows(frame))
    if wide.empty or "copy_fidelity" not in wide:
        return {}
    copies = wide[[suspect_group(a) == "copy" for a in wide["attack"]]]
    out: dict[str, list] = {}
    labels = [f"[{lo:.2f}, {min(hi, 1):.2f}{']' if hi > 1 else ')'}" for lo, hi in zip(FIDELITY_BINS, FIDELITY_BINS[1:])]
    for scheme, rows in copies.groupby("scheme", sort=False):
        bins = pd.cut(rows["copy_fidelity"], FIDELITY_BINS, right=False, labels=labels)
        out[scheme] = [(str(b), int(len(g)), float(g["detected"].mean())) for b, g in rows.groupby(bins, observed=True)]
    return out


def fidelity_svg(frame: pd.DataFrame) -> str | None:
    """Each copy's verdict (p-value) against its fidelity, one panel per scheme."""
    wide = _wide(ownership_rows(frame))
    if wide.empty or "copy_fidelity" not in wide:
        return None
    copies = wide[[suspect_group(a) == "copy" for a in wide["attack"]]]
    if copies.empty:
        return None
    from . import plots

    schemes = list(dict.fromkeys(copies["scheme"]))
    fig, axes = plots._new_figure(len(schemes), (3.4, 2.8))
    alpha = 0.01
    for ax, scheme in zip(axes, schemes):
        rows = copies[copies["scheme"] == scheme]
        for attack, g in rows.groupby("attack", sort=False):
            ax.scatter(g["copy_fidelity"], np.clip(g["p_value"], 1e-12, 1), label=attack, s=18)
        ax.set_yscale("log")
        ax.axhline(alpha, ls=":", c="grey")
        ax.axvline(GOAL["min_fidelity"], ls=":", c="grey")
        ax.set_title(plots.wrap_title(scheme))
        ax.set_xlabel("copy fidelity")
        ax.set_ylabel("p-value (below the line: flagged)")
    plots._shared_legend(fig, axes, 4)
    return plots.svg_string(fig, "ownership")


def section(frame: pd.DataFrame, summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The report's ownership section; None without ownership rows."""
    own = ownership_rows(frame)
    if own.empty:
        return None
    summaries = scheme_summary(frame)
    attacks = list((summary.get("attacks") or {}).keys()) if isinstance(summary, Mapping) else None
    return {"matrix": matrix(frame), "schemes": summaries, "by_fidelity": detection_by_fidelity(frame),
            "figure": fidelity_svg(frame), "goal": goal_line(summaries, attacks), "pct": _pct, "points": _points,
            "fmt_p": fmt_p, "models": (summary or {}).get("ownership_models"), "mitigations": MITIGATIONS}
