"""The interactions section of the report: the conflict matrix in the talk's layout and the raw figures
behind each cell; a pure function of summary.json's ``interactions`` entry (the matrix cell writes it, with
every deployment's figures, as interactions.json does)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from stealcheck.interactions.conflicts import cell_text, risk_text

#: the raw figures shown per deployment, in this order (an ownership member's figures follow)
COLUMNS = ("phi_acc", "raw_accuracy", "robust_accuracy", "mi_advantage", "copy_fidelity", "copy_accuracy",
           "epsilon", "noise_multiplier")


def _fmt(v: Any) -> str:
    if isinstance(v, (int, float)) and math.isfinite(v):
        return f"{v:.4f}"
    return "–"


def section(summary: Mapping[str, Any]) -> dict | None:
    """What the template shows: the matrix rows (text, css class) and the figures table; None without it."""
    m = summary.get("interactions")
    if not m:
        return None
    ids = [x["id"] for x in m["members"]]
    risks = list(m["risks"])
    header = ids + [f"risk: {r}" for r in risks]
    rows = []
    for i, a in enumerate(ids):
        cells = []
        for j, b in enumerate(ids):
            if j == i:
                cells.append(("X", "diag"))
            elif j < i:
                cells.append(("", ""))
            else:
                cell = m["pairs"].get(f"{a}+{b}") or m["pairs"].get(f"{b}+{a}")
                status = cell["status"] if cell else "missing"
                title = cell.get("reason", "") if cell else ""
                cells.append((cell_text(cell) if cell else "not run",
                              {"conflict": "conflict", "ok": "ok"}.get(status, "na"), title))
        rc = m["risk_cells"].get(a, {})
        for r in risks:
            effect = rc.get(r, {}).get("effect", "n/a")
            cells.append((risk_text(rc[r]) if r in rc else "", {"increases": "conflict", "decreases": "ok"}
                          .get(effect, "na")))
        rows.append({"id": a, "cells": [c if len(c) == 3 else (*c, "") for c in cells]})
    figures = m["figures"]
    extra = sorted({k for f in figures.values() for k in f if "@" in k})
    columns = [c for c in COLUMNS if any(c in f for f in figures.values())] + extra
    order = ["none"] + ids + [p for p in m["pairs"] if p in figures]
    table = [{"deployment": d, "figures": [_fmt(figures[d].get(c)) for c in columns]} for d in order if d in figures]
    skipped = [{"pair": p, "reason": c.get("reason", "")} for p, c in m["pairs"].items()
               if c["status"] == "cannot combine"]
    tol = ", ".join(f"{k} {v:g}" for k, v in m["tolerances"].items())
    return {"header": header, "rows": rows, "columns": columns, "table": table, "skipped": skipped,
            "tolerances": tol, "conflicts": m["conflicts"], "accuracy_reference": m.get("accuracy_reference", "better")}
