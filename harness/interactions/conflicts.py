"""The conflict rule and the conflict matrix (pure Python: no torch, no ART).

A pair A + B **conflicts** when deploying both costs more than the tolerance on

- phi_ACC: the pair's accuracy against A alone and against B alone, i.e. against the better of the two (the
  talk's rule: an ownership check that leaves the model as it is conflicts with DP on accuracy when DP costs
  more than the tolerance), or with ``accuracy_reference: costlier`` against the costlier of the two (what the
  combination costs beyond its members' own costs), or
- any of A's own figures against A alone, or any of B's own figures against B alone,

each drop counted in the figure's bad direction (a lower robust accuracy, a higher MI advantage, a higher
fidelity of the stolen copy) and compared with the figure's tolerance (``interactions.tolerances``).

An "other risk" column compares every deployment (each defence alone, each pair) with the undefended
baseline: the risk increases, decreases or is unchanged (within the same tolerance).
"""

from __future__ import annotations

import math
from typing import Any

from .specs import FIGURES, RISKS

#: figures that belong to one member (two ownership schemes in a pair each have their own)
PER_MEMBER = ("trigger_accuracy", "ownership_confidence", "auroc")


def figure_key(member_id: str, figure: str) -> str:
    """The key of ``figure`` in a deployment's figures: per member for the ownership schemes' figures."""
    return f"{figure}@{member_id}" if figure in PER_MEMBER else figure


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def drop(figure: str, reference: float, value: float) -> float:
    """How far ``value`` is worse than ``reference`` (positive = worse) in ``figure``'s bad direction."""
    return (reference - value) if FIGURES[figure].higher_is_better else (value - reference)


def judge_pair(a: dict, b: dict, alone_a: dict, alone_b: dict, pair: dict, tolerances: dict[str, float],
               accuracy_reference: str = "better") -> dict:
    """The conflict rule for one pair. ``a``/``b``: members ({id, figures, symbols}); ``alone_*``/``pair``:
    figures of each deployment; ``accuracy_reference``: phi_ACC against the ``better`` or the ``costlier`` member
    alone. Returns {status: conflict | ok | undecided, failed: [...], checked: [...]}."""
    checked, undecided = [], []

    def check(figure: str, symbol: str, key: str, reference: float, against: str) -> None:
        value = pair.get(key)
        if not (_finite(reference) and _finite(value)):
            undecided.append(symbol)
            return
        d = drop(figure, reference, value)
        tol = tolerances[figure]
        checked.append({"phi": symbol, "figure": figure, "key": key, "against": against, "alone": reference,
                        "pair": value, "drop": d, "tolerance": tol, "failed": bool(d > tol + 1e-12)})

    acc_a, acc_b = alone_a.get("phi_acc"), alone_b.get("phi_acc")
    if _finite(acc_a) and _finite(acc_b):
        # "better": against each defence alone, so against the better of the two (the talk's DI x DP cell: DI
        # alone leaves the model as it is, DP costs accuracy); "costlier": only the combination's own cost
        better = acc_a >= acc_b if accuracy_reference == "better" else acc_a <= acc_b
        ref, against = (acc_a, a["id"]) if better else (acc_b, b["id"])
    else:
        ref, against = float("nan"), ""
    check("phi_acc", "phi_ACC", "phi_acc", ref, against)
    for m, alone in ((a, alone_a), (b, alone_b)):
        for figure, symbol in zip(m["figures"], m["symbols"]):
            key = figure_key(m["id"], figure)
            check(figure, symbol, key, alone.get(key, float("nan")), m["id"])
    failed = [c for c in checked if c["failed"]]
    status = "conflict" if failed else ("undecided" if undecided else "ok")
    return {"status": status, "failed": failed, "checked": checked, "undecided": undecided}


def risk_change(risk: str, baseline: float, value: float, tolerance: float) -> dict:
    """How a deployment changes an "other risk" against the undefended baseline."""
    figure = RISKS[risk]
    if not (_finite(baseline) and _finite(value)):
        return {"figure": figure, "baseline": baseline, "value": value, "change": float("nan"), "effect": "n/a"}
    worse = drop(figure, baseline, value)  # positive: the risk grew
    effect = "increases" if worse > tolerance + 1e-12 else "decreases" if -worse > tolerance + 1e-12 else "unchanged"
    return {"figure": figure, "baseline": baseline, "value": value, "change": value - baseline, "effect": effect}


def build_matrix(members: list[dict], figures: dict[str, dict], tolerances: dict[str, float], risks: list[str],
                 pairs: list[tuple[str, str]], skipped: dict[str, str], accuracy_reference: str = "better") -> dict:
    """The conflict matrix: ``members`` in declaration order ({id, plugin, role, figures, symbols}),
    ``figures``: deployment id ('none', a member id, 'a+b') -> its figures, ``pairs``: the pairs run,
    ``skipped``: 'a+b' -> why that pair cannot be deployed."""
    by_id = {m["id"]: m for m in members}
    cells: dict[str, dict] = {}
    for a, b in pairs:
        pid = f"{a}+{b}"
        if pid not in figures or a not in figures or b not in figures:
            cells[pid] = {"a": a, "b": b, "status": "missing", "failed": [], "checked": [], "undecided": []}
            continue
        cells[pid] = {"a": a, "b": b, **judge_pair(by_id[a], by_id[b], figures[a], figures[b], figures[pid],
                                                   tolerances, accuracy_reference)}
    for pid, reason in skipped.items():
        a, _, b = pid.partition("+")
        cells[pid] = {"a": a, "b": b, "status": "cannot combine", "reason": reason, "failed": [], "checked": []}
    baseline = figures.get("none", {})
    risk_cells = {}
    for deployment in [m["id"] for m in members] + [f"{a}+{b}" for a, b in pairs]:
        if deployment in figures:
            risk_cells[deployment] = {r: risk_change(r, baseline.get(RISKS[r], float("nan")),
                                                     figures[deployment].get(RISKS[r], float("nan")),
                                                     tolerances[RISKS[r]]) for r in risks}
    return {"members": members, "tolerances": tolerances, "accuracy_reference": accuracy_reference, "risks": risks,
            "figures": figures, "pairs": cells,
            "risk_cells": risk_cells, "conflicts": sorted(p for p, c in cells.items() if c["status"] == "conflict")}


def _points(figure: str, change: float) -> str:
    """A change as the matrix prints it: points (x100) for shares, plain units for epsilon."""
    return f"{change:+.2f}" if figure == "epsilon" else f"{100 * change:+.1f}"


def cell_text(cell: dict) -> str:
    """One pair's cell: the figures that failed and by how much (points), 'ok', or why not."""
    status = cell["status"]
    if status == "conflict":
        return ", ".join(f"{c['phi']} {_points(c['figure'], c['pair'] - c['alone'])}" for c in cell["failed"])
    if status == "ok":
        return "ok"
    if status == "cannot combine":
        return "n/a (cannot combine)"
    if status == "undecided":
        return "? (" + ", ".join(cell["undecided"]) + " not measured)"
    return status


def risk_text(change: dict) -> str:
    """A risk cell: up / down / = and the change of the figure that measures the risk (points)."""
    effect = change["effect"]
    if effect == "n/a":
        return "n/a"
    arrow = {"increases": "up", "decreases": "down", "unchanged": "="}[effect]
    return f"{arrow} ({FIGURES[change['figure']].symbol} {_points(change['figure'], change['change'])})"


def format_matrix(matrix: dict) -> str:
    """The matrix in the talk's layout (defences x defences, upper triangle, then the other-risk columns),
    as a Markdown table. A conflicting pair shows each figure that failed and its change against the
    defence alone, in points (x100; epsilon in its units); risk columns show whether the deployment makes
    the risk larger (up), smaller (down) or neither (=) against no defence, and the change of its figure."""
    ids = [m["id"] for m in matrix["members"]]
    risks = matrix["risks"]
    header = ["defence"] + ids + [f"risk: {r}" for r in risks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, a in enumerate(ids):
        row = [a]
        for j, b in enumerate(ids):
            if j == i:
                row.append("X")
            elif j < i:
                row.append("")
            else:
                cell = matrix["pairs"].get(f"{a}+{b}") or matrix["pairs"].get(f"{b}+{a}")
                row.append(cell_text(cell) if cell else "not run")
        rc = matrix["risk_cells"].get(a, {})
        row += [risk_text(rc[r]) if r in rc else "" for r in risks]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def matrix_rows(matrix: dict, victim: str) -> list[dict]:
    """results.csv rows of the conflict rule, for gates: per pair ``conflict`` (1/0) and, per checked figure,
    ``phi_conflict`` (1/0) and ``phi_drop`` with the figure's symbol (and, for a defence's own figure, ':'
    and the defence) in the scheme column; per deployment and risk, ``risk_change`` with the risk there."""
    rows = []

    def row(defence: str, metric: str, value: float, scheme: str = "") -> dict:
        return {"kind": "interaction", "victim": victim, "defence": defence, "attack": "", "budget": "", "seed": "",
                "metric": metric, "value": float(value), "scheme": scheme}

    for pid, cell in matrix["pairs"].items():
        if cell["status"] in ("cannot combine", "missing"):
            continue
        rows.append(row(pid, "conflict", float(cell["status"] == "conflict")))
        for c in cell["checked"]:
            name = c["phi"] if c["against"] in ("", None) or c["figure"] == "phi_acc" else f"{c['phi']}:{c['against']}"
            rows.append(row(pid, "phi_conflict", float(c["failed"]), name))
            rows.append(row(pid, "phi_drop", c["drop"], name))
    for deployment, changes in matrix["risk_cells"].items():
        for risk, change in changes.items():
            if change["effect"] != "n/a":
                rows.append(row(deployment, "risk_change", change["change"], risk))
    return rows
