"""Figures of the HTML report, rendered by matplotlib as inline SVG strings.

Only the object-oriented API (``matplotlib.figure.Figure``) is used, never pyplot: no GUI backend,
no global figure registry, and no change to the process-wide backend of whoever imported us.
Every setting that shapes the SVG (font handling, id salt, no date metadata) is fixed so that the
same results always give byte-identical SVG, which keeps the report a pure function of its inputs.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

# Colour-blind-safe palette (Okabe & Ito); the undefended baseline is drawn in neutral black.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#999999"]
BASELINE_COLOUR = "#222222"
MAX_COLUMNS = 3

_RC = {
    "svg.fonttype": "none",  # keep text as <text>: crisp, searchable, and small
    "svg.hashsalt": "stealcheck",  # deterministic ids for clip paths and markers
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
}
# No Creator/Date/Format/Type: the date would break reproducibility, the others carry URLs.
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def defence_colours(defences: Sequence[str], baseline: str | None) -> dict[str, str]:
    """A stable colour per defence, shared by every figure so a defence looks the same everywhere."""
    colours, i = {}, 0
    for d in defences:
        if d == baseline:
            colours[d] = BASELINE_COLOUR
        else:
            colours[d] = PALETTE[i % len(PALETTE)]
            i += 1
    return colours


def plain(text: str) -> str:
    """Escape ``$`` so matplotlib never reads a plugin id as mathtext."""
    return str(text).replace("$", r"\$")


def wrap_title(text: str, width: int = 34) -> str:
    """Wrap a long label at its spaces (and a raw id at its commas) so subplot titles do not overlap."""
    return "\n".join(textwrap.wrap(re.sub(r",(?! )", ", ", plain(text)), width=width)) or " "


def svg_string(fig: Figure, prefix: str) -> str:
    """``fig`` as an inline <svg> element: no XML prolog, and ids made unique on the page."""
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # the prolog and DOCTYPE are not allowed inside HTML
    # Several figures share one HTML document, and matplotlib numbers ids per figure (patch_1, ...):
    # prefix every id and every reference to one so that they cannot collide.
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    return svg.replace("<svg", f'<svg role="img" class="figure-svg" aria-label="{prefix}"', 1)


def _new_figure(n_panels: int, panel_size: tuple[float, float]) -> tuple[Figure, list]:
    """A figure with ``n_panels`` axes in rows of at most MAX_COLUMNS; unused axes are hidden."""
    cols = max(1, min(MAX_COLUMNS, n_panels))
    rows = max(1, math.ceil(n_panels / cols))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained")
        axes = list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def budget_curves_svg(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float, float, float]]]],
                      *, metric_label: str, colours: Mapping[str, str], baseline: str | None,
                      labels: Mapping[str, str] | None = None, reference: float | None = None,
                      reference_label: str = "", prefix: str) -> str:
    """One panel per attack: ``metric_label`` against the query budget, one line per defence.

    ``curves[attack][defence]`` is a list of ``(budget, mean, low, high)`` points; a shaded band shows
    the interval [low, high] where it is known (NaN where not). ``labels`` maps ids to the names shown.
    ``reference`` draws a dotted horizontal line (the victim's own accuracy, for instance).

    Each panel has its own numeric budget axis, ticked at that attack's budgets: attacks may have budgets
    of their own (Tramèr's d + 1 against Lowd-Meek's hundreds), and ticking every panel with the union
    would space them as categories. The axis is logarithmic when a panel's budgets span 20× or more.
    """
    labels = labels or {}
    attacks = list(curves)
    fig, axes = _new_figure(len(attacks), (3.9, 2.9))
    with matplotlib.rc_context(_RC):
        for ax, attack in zip(axes, attacks):
            for defence, points in curves[attack].items():
                _draw_curve(ax, points, label=plain(labels.get(defence, defence)),
                            colour=colours.get(defence, PALETTE[-1]), on_top=defence == baseline)
            if reference is not None and np.isfinite(reference):
                ax.axhline(reference, color="#888888", linestyle=":", linewidth=1.2, label=plain(reference_label),
                           zorder=1.5)
            ax.set_title(wrap_title(labels.get(attack, attack)), loc="left")
            ax.set_xlabel("query budget")
            ax.set_ylabel(metric_label)
            ax.set_ylim(-0.02, 1.02)
            _budget_axis(ax, sorted({p[0] for pts in curves[attack].values() for p in pts}))
        _shared_legend(fig, axes, 5)
    return svg_string(fig, prefix)


def _budget_axis(ax, budgets: Sequence[float]) -> None:
    """A numeric x axis ticked at this panel's budgets; logarithmic when they span 20× or more."""
    if not budgets:
        return
    if budgets[0] > 0 and budgets[-1] / budgets[0] >= 20:
        ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:,.0f}" for b in budgets])
    ax.minorticks_off()
    if len(budgets) == 1:  # a single budget: centre it instead of an axis of zero width
        ax.set_xlim(budgets[0] * 0.5, budgets[0] * 1.5)


def _draw_curve(ax, points: Sequence[tuple[float, float, float, float]], *, label: str, colour: str,
                on_top: bool) -> None:
    """A mean line with markers and, where the interval is known, a shaded [low, high] band.

    ``on_top`` (the undefended baseline) is drawn dashed and above every other line: it is the
    reference the others are read against, and defences that change nothing would otherwise cover it.
    """
    pts = sorted(points)
    x = np.array([p[0] for p in pts], dtype=float)
    mean, low, high = (np.array([p[i] for p in pts], dtype=float) for i in (1, 2, 3))
    ax.plot(x, mean, color=colour, marker="o", markersize=3.5, linewidth=1.8,
            linestyle="--" if on_top else "-", label=label, zorder=4 if on_top else 2)
    known = np.isfinite(low) & np.isfinite(high)
    if known.any():
        ax.fill_between(x, low, high, where=known, color=colour, alpha=0.13, linewidth=0, zorder=1,
                        interpolate=False)


def attack_time_svg(seconds: Mapping[str, Mapping[str, float]], *, colours: Mapping[str, str],
                    budget_label: str, labels: Mapping[str, str] | None = None, prefix: str) -> str:
    """Grouped horizontal bars: the attack's wall time (thief training included) per attack and defence."""
    labels = labels or {}
    attacks = list(seconds)
    defences = list(dict.fromkeys(d for per_def in seconds.values() for d in per_def))
    height = 0.8 / max(1, len(defences))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8.5, 1.1 + 0.2 * len(attacks) * max(1, len(defences))), layout="constrained")
        ax = fig.subplots()
        for j, defence in enumerate(defences):
            y = [i + (j - (len(defences) - 1) / 2) * height for i in range(len(attacks))]
            values = [seconds[a].get(defence, float("nan")) for a in attacks]
            ax.barh(y, values, height=height * 0.9, color=colours.get(defence, PALETTE[-1]),
                    label=plain(labels.get(defence, defence)))
        ax.set_yticks(range(len(attacks)), [wrap_title(labels.get(a, a), 40) for a in attacks])
        ax.invert_yaxis()  # first attack on top, as in the tables
        ax.set_xlabel(f"attack wall time {budget_label} (s)")
        ax.grid(axis="y", visible=False)
        if defences:
            fig.legend(loc="outside lower center", ncols=min(len(defences), 5), fontsize=8.5)
    return svg_string(fig, prefix)


def roc_curves_svg(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], *,
                   colours: Mapping[str, str], labels: Mapping[str, str] | None = None, prefix: str) -> str:
    """One panel per attack: the ROC curve (false- vs true-positive rate) of each detector.

    ``curves[attack][detector]`` is ``(fpr, tpr)``; the dotted diagonal is a detector that guesses.
    ``labels`` maps ids to the names shown.
    """
    labels = labels or {}
    attacks = list(curves)
    fig, axes = _new_figure(len(attacks), (3.3, 3.0))
    with matplotlib.rc_context(_RC):
        for ax, attack in zip(axes, attacks):
            ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1.0, label="chance")
            for detector, (fpr, tpr) in curves[attack].items():
                ax.plot(np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float), linewidth=1.7,
                        color=colours.get(detector, PALETTE[-1]), label=plain(labels.get(detector, detector)))
            ax.set_title(wrap_title(labels.get(attack, attack)), loc="left")
            ax.set_xlabel("false-positive rate (benign flagged)")
            ax.set_ylabel("true-positive rate (attack caught)")
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.02)
            ax.set_aspect("equal", adjustable="box")
        _shared_legend(fig, axes, 5)
    return svg_string(fig, prefix)


def stealth_svg(points: Mapping[str, Mapping[str, Sequence[tuple[float, float, str]]]], *,
                labels: Mapping[str, str] | None = None, prefix: str) -> str:
    """One panel per detector: each attack family's (detection AUROC, copy fidelity) points, joined in
    order of AUROC and labelled with the attack's name — the adaptive attacker's stealth / quality curve.
    ``labels`` maps detector ids to the names shown."""
    labels = labels or {}
    detectors = [d for d in points if points[d]]
    fig, axes = _new_figure(max(1, len(detectors)), (4.2, 3.3))
    with matplotlib.rc_context(_RC):
        for ax, detector in zip(axes, detectors):
            for i, (family, pts) in enumerate(points[detector].items()):
                pts = sorted(pts)
                xs = [100 * p[0] for p in pts]
                ys = [p[1] for p in pts]
                colour = PALETTE[i % len(PALETTE)]
                ax.plot(xs, ys, marker="o", linewidth=1.5, color=colour, label=plain(family))
                for x, y, (_, _, name) in zip(xs, ys, pts):
                    ax.annotate(plain(name), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7,
                                color=colour)
            ax.axvline(70, color="#999999", linestyle=":", linewidth=1.0)
            ax.set_title(wrap_title(f"detected by {labels.get(detector, detector)}"), loc="left")
            ax.set_xlabel("detection AUROC (%)")
            ax.set_ylabel("copy fidelity")
            ax.set_xlim(40, 101)
        _shared_legend(fig, axes, 3)
    return svg_string(fig, prefix)


def _shared_legend(fig: Figure, axes, max_cols: int) -> None:
    """One legend below the panels with every labelled line once (a line may be missing from a panel)."""
    legend: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center",
                   ncols=min(len(legend), max_cols), fontsize=8.5)
