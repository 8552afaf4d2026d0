"""Plain-text formatting shared by the terminal output and the report."""

from __future__ import annotations

import math
from typing import Any

DASH = "\u2013"  # shown for NaN and missing values


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, NaN, infinite or not a number)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt_duration(seconds: Any) -> str:
    """Seconds as '< 0.01 s' / '0.31 s' / '4.2 s' / '2 min 25 s' / '1 h 03 min'.

    Sub-second times keep two decimals: '0.0 s' would hide a real, if short, cost.
    """
    s = finite_float(seconds)
    if s is None:
        return DASH
    if s < 0.005:
        return "< 0.01 s"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
