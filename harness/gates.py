"""Expectation gates: evaluated on the results at the end of a run; JUnit XML for CI."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd

from .scenario import Gate, is_ownership_suspect


@dataclass
class GateResult:
    """The outcome of one gate: every matching cell's mean over seeds, and whether all are in bounds."""

    name: str
    metric: str
    min: float | None
    max: float | None
    passed: bool
    observed: list[dict]  # [{"defence", "attack", "budget", "value"}]
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _matches(ids: pd.Series, wanted: str, plugins: dict[str, str]) -> np.ndarray:
    """Which of ``ids`` a gate's ``wanted`` selects: that id if it is one, else every id of that plugin."""
    if wanted in plugins:
        return np.array([i == wanted for i in ids], dtype=bool)
    return np.array([plugins.get(i) == wanted for i in ids], dtype=bool)


def evaluate_gate(gate: Gate, frame: pd.DataFrame, attack_plugins: dict[str, str],
                  defence_plugins: dict[str, str], budgets: list[int] | dict[str, list[int]],
                  scheme_plugins: dict[str, str] | None = None) -> GateResult:
    """Check ``gate`` against ``frame`` (results.csv). No matching result is a failure.

    ``defence_plugins`` maps defence ids — and detector ids — to their plugin names.

    ``attack``, ``defence`` and ``detector`` name an id, or a plugin (every entry of that plugin)
    when no entry has that id: an id wins, so ``attack: jbda`` with an entry whose id is ``jbda``
    checks that entry only, not its ``jbda_step02`` sibling.

    ``scheme`` (ownership gates) names a scheme id or plugin (``scheme_plugins``: id -> plugin); every
    matching suspect row counts, at every checkpoint unless the gate names a budget.

    ``budgets``: the scenario's checkpoints, or each attack id's own; a gate without a budget reads
    every matching attack at its largest checkpoint.
    """
    rows = frame[frame["metric"] == gate.metric]
    if getattr(gate, "scheme", None) is not None:
        # Ownership rows carry the scheme's id in the scheme column; a plugin name selects each of its schemes.
        rows = rows[rows["kind"].eq("ownership")]
        schemes = rows["scheme"].astype(object).where(rows["scheme"].notna(), "") if "scheme" in rows else rows["kind"]
        rows = rows[_matches(schemes, gate.scheme, scheme_plugins or {})]
        rows = rows[rows["attack"].notna() & (rows["attack"].astype(str) != "")]  # suspects, not cost rows
        if gate.budget is not None:
            rows = rows[pd.to_numeric(rows["budget"], errors="coerce") == gate.budget]
    if gate.detector is not None:
        # Detection rows carry the detector's id in the defence column.
        rows = rows[rows["kind"].isin(["detection", "detector"])]
        rows = rows[_matches(rows["defence"], gate.detector, defence_plugins)]
    if gate.defence is not None:
        rows = rows[_matches(rows["defence"], gate.defence, defence_plugins)]
    if gate.attack is not None:
        if getattr(gate, "scheme", None) is not None and is_ownership_suspect(gate.attack):
            rows = rows[rows["attack"] == gate.attack]  # the victim, an independent model, the false claims
        else:
            rows = rows[_matches(rows["attack"], gate.attack, attack_plugins)]
    scope_is_extraction = rows["kind"].eq("extraction").any() if len(rows) else getattr(gate, "scheme", None) is None
    if len(rows) and rows["kind"].eq("detection").all():
        numeric = pd.to_numeric(rows["budget"], errors="coerce")
        rows = rows[numeric == (gate.budget if gate.budget is not None else numeric.max())]
    elif scope_is_extraction:
        numeric = pd.to_numeric(rows["budget"], errors="coerce")
        if gate.budget is not None:
            rows = rows[numeric == gate.budget]
        else:
            largest = {a: max(b) for a, b in budgets.items()} if isinstance(budgets, dict) else {}
            fallback = max(budgets) if not isinstance(budgets, dict) else None
            rows = rows[[b == largest.get(a, fallback) for a, b in zip(rows["attack"], numeric)]]
    observed = []
    if len(rows):
        keyed = rows.assign(attack=rows["attack"].astype(object).where(rows["attack"].notna(), ""),
                            defence=rows["defence"].astype(object).where(rows["defence"].notna(), ""),
                            budget=pd.to_numeric(rows["budget"], errors="coerce"))
        grouped = keyed.groupby(["defence", "attack", "budget"], sort=True, dropna=False)["value"].mean()
        for (defence, attack, budget), value in grouped.items():
            observed.append({"defence": defence, "attack": attack or None,
                             "budget": None if pd.isna(budget) else int(budget), "value": float(value)})
    failures = [o for o in observed
                if not np.isfinite(o["value"])
                or (gate.min is not None and o["value"] < gate.min)
                or (gate.max is not None and o["value"] > gate.max)]
    if not observed:
        detail = "no results matched this gate (did the run finish?)"
    elif failures:
        detail = "; ".join(f"{o['attack'] or '-'} vs {o['defence']} @ {o['budget']}: {o['value']:.4f}" for o in failures)
    else:
        detail = "; ".join(f"{o['attack'] or '-'} vs {o['defence']} @ {o['budget']}: {o['value']:.4f}" for o in observed)
    return GateResult(gate.label(), gate.metric, gate.min, gate.max, bool(observed) and not failures,
                      observed, detail)


def write_junit(results: list[GateResult], path: Path, suite: str) -> None:
    """One <testcase> per gate; a failed gate carries a <failure> with the observed values."""
    failures = sum(not r.passed for r in results)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name={quoteattr("stealcheck." + suite)} tests="{len(results)}" failures="{failures}" '
             f'errors="0">']
    for r in results:
        lines.append(f'  <testcase classname={quoteattr("stealcheck." + suite)} name={quoteattr(r.name)}>')
        if not r.passed:
            lines.append(f'    <failure message={quoteattr(r.detail)}>{escape(r.detail)}</failure>')
        else:
            lines.append(f"    <system-out>{escape(r.detail)}</system-out>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    Path(path).write_text("\n".join(lines) + "\n")


def format_gate_table(results: list[GateResult]) -> str:
    """A plain-text table for the terminal."""
    if not results:
        return ""
    width = max(len(r.name) for r in results)
    lines = [f"{'gate'.ljust(width)}  result  observed"]
    for r in results:
        lines.append(f"{r.name.ljust(width)}  {'PASS' if r.passed else 'FAIL':6}  {r.detail}")
    return "\n".join(lines)
