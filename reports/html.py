"""The HTML report of a run folder: one self-contained page built from results.csv and summary.json.

:func:`build_report` is a pure function of those two files and of the raw detector scores saved
under ``detection/`` (no clock, no re-run), so
``stealcheck report RUN_DIR`` rebuilds exactly the page the run wrote. The page embeds its CSS and
its figures (inline SVG) and references nothing outside itself, so it can be mailed or archived.
Every summary key may be missing (a run that failed early): each section shows what is there.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import jinja2
import numpy as np
import pandas as pd
import yaml
from scipy import stats

from stealcheck.results import read_results, read_summary
from stealcheck.text import DASH, finite_float, fmt_duration
from . import plots

REPORT_FILE = "report.html"
FIDELITY, ACCURACY, SECONDS = "fidelity", "accuracy", "attack_seconds"
# Known metrics in reading order; metrics a later version adds are appended after these.
EXTRACTION_METRICS = [FIDELITY, ACCURACY, "r_test", "r_unif", "fidelity_unif", "kl", "queries_used", SECONDS]
UTILITY_METRICS = ["victim_accuracy", "output_distortion", "label_change_rate"]
METRIC_LABELS = {
    FIDELITY: "fidelity", ACCURACY: "thief accuracy", "r_test": "R test", "r_unif": "R unif",
    "fidelity_unif": "fidelity (uniform)", "kl": "KL (nats)", "queries_used": "queries used",
    SECONDS: "attack time", "victim_accuracy": "victim accuracy", "output_distortion": "output distortion",
    "label_change_rate": "label change rate", "answered_share": "answered share",
    "latency_mean_ms": "mean latency (ms)", "latency_p95_ms": "p95 latency (ms)",
    "param_max_abs_error": "max parameter error", "queries_per_leaf": "queries per leaf",
}
SERVICE_METRICS = ["answered_share", "latency_mean_ms", "latency_p95_ms"]
SERVICE_DESCRIPTIONS = {
    "answered_share": "share of the client's queries answered in full (not rejected or withheld)",
    "latency_mean_ms": "mean response time per query, in milliseconds",
    "latency_p95_ms": "95th percentile of the response time per query, in milliseconds",
}
SHOWN_KINDS = ("extraction", "utility")
STATUS_STYLES = {"complete": "ok", "partial": "warn", "failed": "bad", "running": "info"}
#: confidence level of every interval in the report
CONFIDENCE = 0.95
#: metrics that are a share of the n test samples, so that a binomial (Wilson) interval applies
PROPORTION_METRICS = (FIDELITY, ACCURACY)
TIMING_NOTE = ("Timings depend on the machine and on its load while the run went on: compare them within this "
               "report, not across machines or runs.")


# ---------------------------------------------------------------- entry point

def build_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from the folder's results.csv, summary.json and saved detector
    scores (``detection/*.npz``); return its path.

    Raises :class:`stealcheck.errors.ScenarioError` when ``run_dir`` has no summary.json.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    frame = read_results(run_dir)
    html = render_report(summary, frame, load_detection_scores(run_dir))
    path = run_dir / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)  # a reader never sees a half-written report
    return path


def load_detection_scores(run_dir: Path) -> dict:
    """The raw detector scores the run saved (for ROC curves); empty when there are none or they do not load."""
    if not (Path(run_dir) / "detection").is_dir():
        return {}
    try:
        from stealcheck.detection_track import load_scores

        return load_scores(run_dir)
    except Exception:  # damaged score files cost the ROC figure, never the report
        return {}


def render_report(summary: Mapping[str, Any], frame: pd.DataFrame,
                  scores: Mapping[tuple[str, str, int], Mapping[str, np.ndarray]] | None = None) -> str:
    """The report page as an HTML string, from a summary dict, a results frame and (optionally) the
    raw detector scores, ``scores[(detector, attack, budget)] = {'benign': ..., 'attack': ...}``."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("stealcheck.reports", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**report_context(summary, frame, scores))


def report_context(summary: Mapping[str, Any], frame: pd.DataFrame,
                   scores: Mapping[tuple[str, str, int], Mapping[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Everything the template shows, already aggregated and formatted."""
    summary = dict(summary or {})
    data = RunData.from_frame(frame, summary)
    detection = detection_context(DetectionData.from_frame(frame, summary), summary, scores or {}, data)
    if detection:  # these kinds are shown now: no longer "not shown in this report"
        for kind in ("detection", "detector"):
            data.other_kinds.pop(kind, None)
    from .ownership import section as ownership_section

    ownership = ownership_section(frame, summary)
    if ownership:
        data.other_kinds.pop("ownership", None)
    from .interactions import section as interactions_section

    interactions = interactions_section(summary)
    if interactions:
        for kind in ("interaction", "conflict"):
            data.other_kinds.pop(kind, None)
    colours = plots.defence_colours(data.defences, data.baseline)
    victim = as_dict(summary.get("victim"))
    timings = timing_note(summary)
    return {
        "header": header_context(summary, data),
        "gates": gates_context(summary.get("gates"), [*as_dict(summary.get("attacks")),
                                                       *as_dict(summary.get("defences")),
                                                       *as_dict(summary.get("detectors"))]),
        "has_extraction": not data.agg.empty,
        "summary_table": summary_table(data),
        "figures": figures(data, colours, victim.get("test_accuracy"), timings),
        "timing_note": timings,
        "seconds_table": seconds_table(data),
        "utility": utility_table(data),
        "detection": detection,
        "active": active_defences_table(data, summary),
        "ownership": ownership,
        "interactions": interactions,
        "full_table": full_table(data),
        "glossary": glossary(data.extraction_metrics + data.utility_metrics),
        "other_kinds": data.other_kinds,
        "provenance": provenance(summary),
    }


# ---------------------------------------------------------------- data

class RunData:
    """results.csv split by kind, with extraction metrics aggregated over seeds."""

    def __init__(self, agg: pd.DataFrame, utility: pd.DataFrame, attacks: list[str], defences: list[str],
                 budgets: list[int], baseline: str | None, other_kinds: dict[str, int],
                 test_size: int | None = None, served_defence: str | None = None):
        self.test_size = test_size  # n, the test samples fidelity and accuracy are shares of; None if unknown
        #: a remote victim's own defence at its endpoint: then the baseline 'none' is "as served", not undefended
        self.served_defence = served_defence
        self.agg = agg  # columns defence, attack, budget, metric, mean, std, n
        # Tables look cells up one by one: index them once instead of filtering the frame each time.
        self._cells = {(d, a, int(b), m): (float(mean), float(std), int(n)) for d, a, b, m, mean, std, n in
                       agg[["defence", "attack", "budget", "metric", "mean", "std", "n"]].itertuples(index=False)}
        self.utility = utility  # columns defence, metric, value
        self.attacks, self.defences, self.budgets = attacks, defences, budgets
        self.baseline = baseline
        self.other_kinds = other_kinds
        self.extraction_metrics = metric_order(agg["metric"], EXTRACTION_METRICS)
        self.utility_metrics = metric_order(utility["metric"], UTILITY_METRICS)

    @property
    def top_budget(self) -> int | None:
        """The largest budget that has results."""
        return self.budgets[-1] if self.budgets else None

    def top_budget_of(self, attack: str) -> int | None:
        """The largest budget with results for ``attack``: the one the summary tables read it at
        (attacks may have budgets of their own)."""
        budgets = self.agg.loc[self.agg["attack"] == attack, "budget"]
        return int(budgets.max()) if len(budgets) else None

    def at_top_budget(self) -> str:
        """'At 1,500 queries', or 'At each attack's largest budget' when attacks differ."""
        tops = {self.top_budget_of(a) for a in self.attacks} - {None}
        if len(tops) == 1:
            return f"At {fmt_budget(tops.pop())} queries"
        return "At each attack's largest budget"

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, summary: Mapping[str, Any]) -> "RunData":
        frame = frame.copy()
        for col in ("kind", "defence", "attack", "metric"):
            frame[col] = frame[col].fillna("").astype(str) if col in frame else ""
        for col in ("budget", "seed", "value"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else np.nan
        ext = frame[(frame["kind"] == "extraction") & frame["budget"].notna()]
        util = frame[frame["kind"] == "utility"]
        other = frame.loc[~frame["kind"].isin(SHOWN_KINDS), "kind"].value_counts()

        agg = aggregate_over_seeds(ext)
        utility = util.groupby(["defence", "metric"], sort=False, as_index=False)["value"].mean()
        defence_plugins = as_dict(summary.get("defences"))
        attack_plugins = as_dict(summary.get("attacks"))
        defences = ordered(defence_plugins, list(ext["defence"]) + list(util["defence"]))
        attacks = ordered(attack_plugins, ext["attack"])
        budgets = sorted(int(b) for b in ext["budget"].unique())
        return cls(agg, utility, attacks, defences, budgets, find_baseline(defences, defence_plugins),
                   {str(k) or "(blank)": int(v) for k, v in other.items()}, test_size(summary),
                   served_defence(summary))

    def cell(self, defence: str, attack: str, budget: int | None, metric: str) -> tuple[float, float, int]:
        """(mean, std, seeds) of one cell; NaNs and 0 when it has no result."""
        return self._cells.get((defence, attack, budget, metric), (math.nan, math.nan, 0))

    def estimate(self, defence: str, attack: str, budget: int | None, metric: str) -> "Estimate":
        """One cell's mean over seeds with its interval (see :func:`estimate`)."""
        mean, std, seeds = self.cell(defence, attack, budget, metric)
        return estimate(metric, mean, std, seeds, self.test_size)

    def utility_value(self, defence: str, metric: str) -> float:
        rows = self.utility[(self.utility["defence"] == defence) & (self.utility["metric"] == metric)]
        return float(rows["value"].iloc[0]) if len(rows) else math.nan

    def seed_count(self) -> int:
        return int(self.agg["n"].max()) if len(self.agg) else 0


def test_size(summary: Mapping[str, Any]) -> int | None:
    """n, the number of test samples the extraction metrics were measured on: the runner records it as
    ``summary["victim"]["test_samples"]`` (after ``evaluation.test_limit``). None when absent or invalid, and
    the report then shows "n unknown" and no binomial interval."""
    n = as_dict(summary.get("victim")).get("test_samples")
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n < 1:
        return None
    return int(n)


def aggregate_over_seeds(ext: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (NaN with one seed) and seed count per defence × attack × budget × metric."""
    columns = ["defence", "attack", "budget", "metric", "mean", "std", "n"]
    if ext.empty:
        return pd.DataFrame(columns=columns)
    grouped = ext.groupby(["defence", "attack", "budget", "metric"], sort=False)["value"]
    agg = grouped.agg(mean="mean", std="std", n="count").reset_index()
    agg["budget"] = agg["budget"].astype(int)
    return agg[columns]


def ordered(preferred: Iterable[str], present: Iterable[str]) -> list[str]:
    """Ids in the scenario's order (``preferred``) if they have results, then any others as they appear."""
    present = [p for p in dict.fromkeys(present) if p]
    return [p for p in preferred if p in present] + [p for p in present if p not in preferred]


def find_baseline(defences: list[str], plugins: Mapping[str, str]) -> str | None:
    """The undefended configuration (plugin ``none``), the reference every defence is compared with."""
    for d in defences:
        if plugins.get(d, d) == "none":
            return d
    return None


def metric_order(present: Iterable[str], known: list[str]) -> list[str]:
    present = list(dict.fromkeys(present))
    return [m for m in known if m in present] + sorted(m for m in present if m not in known)


# ---------------------------------------------------------------- uncertainty

class Estimate(NamedTuple):
    """A cell's mean over seeds and its CONFIDENCE interval (``low``/``high`` NaN when none can be given)."""

    mean: float
    low: float
    high: float
    seeds: int
    method: str  # "wilson" (one seed, binomial over the test set), "t" (over seeds) or "" (no interval)

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def wilson_interval(share: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion observed as ``share`` of ``n`` samples.

    Wilson rather than the normal ("Wald") interval because it stays inside [0, 1] and keeps its
    coverage near 0 and 1, where fidelity often lies. Written out (not ``scipy.stats.binomtest``) because
    a mean over seeds is not a whole number of successes; for whole numbers both agree (tested)::

        centre = (p + z²/2n) / (1 + z²/n),   half = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/4n²)
    """
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = min(max(float(share), 0.0), 1.0)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def t_half_width(std: float, seeds: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t interval of a mean over ``seeds`` runs whose sample std is ``std``."""
    return float(stats.t.ppf(0.5 + confidence / 2, seeds - 1)) * std / math.sqrt(seeds)


def estimate(metric: str, mean: float, std: float, seeds: int, n: int | None) -> Estimate:
    """A cell's mean with its interval.

    - One seed, a proportion metric (fidelity, accuracy) and a known test-set size ``n``: the Wilson
      interval, the uncertainty from measuring on n test samples only.
    - Several seeds: mean ± the t-interval over seeds. For a proportion it is never narrower than the
      Wilson interval at the mean, because all seeds share one test set: seeds that happen to agree
      do not remove the test set's own sampling error.
    - Otherwise (one seed and n unknown, or a metric that is not a proportion): no interval.
    """
    nan = math.nan
    if not math.isfinite(mean):
        return Estimate(mean, nan, nan, seeds, "")
    proportion = metric in PROPORTION_METRICS and n is not None
    if seeds > 1 and math.isfinite(std):
        half = t_half_width(std, seeds)
        if proportion:
            lo, hi = wilson_interval(mean, n)
            half = max(half, mean - lo, hi - mean)
        lo, hi = mean - half, mean + half
        if metric in PROPORTION_METRICS:  # a share cannot leave [0, 1]
            lo, hi = max(0.0, lo), min(1.0, hi)
        return Estimate(mean, lo, hi, seeds, "t")
    if proportion:
        return Estimate(mean, *wilson_interval(mean, n), seeds, "wilson")
    return Estimate(mean, nan, nan, seeds, "")


def compare(a: Estimate, b: Estimate) -> str | None:
    """'lower' or 'higher' when ``a`` differs from ``b`` beyond the uncertainty (their intervals do not
    overlap), 'tie' when they overlap, None when either has no interval.

    Non-overlapping 95% intervals is a conservative test (stricter than a two-sample test at 5%), the
    right side to err on before calling a defence effective.
    """
    if not (a.has_interval and b.has_interval):
        return None
    return "lower" if a.high < b.low else "higher" if a.low > b.high else "tie"


def overlap(a: Estimate, b: Estimate) -> bool:
    """Whether two intervals overlap (a statistical tie); True when either is unknown: a tie cannot be ruled out."""
    return not (a.has_interval and b.has_interval) or (a.low <= b.high and b.low <= a.high)


def fmt_interval(e: Estimate, digits: int = 3) -> str:
    """The interval alone: '[0.894, 0.927]' (Wilson), '± 0.254' (over seeds), '' when there is none."""
    if not e.has_interval:
        return ""
    if e.method == "t":
        return f"± {fmt(max(e.high - e.mean, e.mean - e.low), digits)}"
    return f"[{fmt(e.low, digits)}, {fmt(e.high, digits)}]"


def fmt_estimate(e: Estimate, digits: int = 3) -> str:
    """'0.912 [0.894, 0.927]', '0.720 ± 0.254', or the mean alone when there is no interval."""
    return " ".join(t for t in (fmt(e.mean, digits), fmt_interval(e, digits)) if t)


def interval_note(test_n: int | None, seeds: int) -> str:
    """How the report's intervals were computed, for the notes under the tables and figures."""
    pct = f"{CONFIDENCE:.0%}"
    n_text = f"n = {test_n:,} test samples" if test_n else "n unknown"
    if seeds > 1:
        return (f"Mean ± {pct} t-interval over {seeds} seeds ({n_text}), never narrower than the Wilson "
                f"interval of the test set{'' if test_n else ' (not applied: n unknown)'}.")
    if test_n:
        return f"[low, high]: {pct} Wilson interval of the proportion over {n_text}."
    return "n unknown (the run did not record the test-set size): no interval can be given."


# ---------------------------------------------------------------- formatting

def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; NaN, None and non-numbers become a dash."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return DASH
    return f"{x:.{digits}f}" if math.isfinite(x) else DASH


def fmt_metric(metric: str, value: float) -> str:
    """A metric value in its natural unit: query counts as integers, seconds as a duration, rates to 3 decimals."""
    if metric == "queries_used":
        return f"{value:,.0f}" if math.isfinite(value) else DASH
    if metric == SECONDS:
        return fmt_duration(value)
    return fmt(value)


def fmt_budget(budget: Any) -> str:
    try:
        return f"{int(budget):,}"
    except (TypeError, ValueError):
        return DASH


def fmt_time(stamp: Any) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS UTC' (the raw text if it does not parse)."""
    if not stamp:
        return DASH
    try:
        t = datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp)
    zone = " UTC" if t.utcoffset() is not None and t.utcoffset().total_seconds() == 0 else \
        (t.strftime(" %z") if t.tzinfo else "")
    return t.strftime("%Y-%m-%d %H:%M:%S") + zone


def fmt_value(value: Any) -> str:
    """Any summary value as short text, for the provenance tables."""
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt(value) if not value.is_integer() else f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value) or DASH
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items()) or DASH
    return str(value)


# A parameter starts after a comma that is followed by 'key=' (a value may itself hold commas: 'a=[1, 2]').
_PARAM_START = re.compile(r",(?=[A-Za-z_][\w.]*=)")
_WORD = re.compile(r"[A-Za-z][\w\-]*")


def config_parts(config_id: str) -> tuple[str, str]:
    """The readable parts of a configuration id: (plugin name, parameters) -> ('knockoff', 'adaptive, cert').

    The runner writes ids as ``plugin:key=value,key=value``. A word value speaks for itself and is shown
    alone ('adaptive'); numbers, flags and lists keep their key ('decimals 1'), since '1' alone says
    nothing. An id without parameters, or one the scenario named itself ('eqsolve-basis'), is kept whole.
    """
    config_id = str(config_id)
    name, sep, params = config_id.partition(":")
    if not sep or "=" not in params:
        return config_id, ""
    shown = []
    for item in _PARAM_START.split(params):
        key, _, value = item.partition("=")
        is_word = _WORD.fullmatch(value) and value not in ("True", "False", "None")
        shown.append(value if is_word else f"{key} {value}")
    return name, ", ".join(shown)


def config_label(config_id: str) -> str:
    """The one readable label of a configuration id, used wherever an id is shown:
    'knockoff:strategy=adaptive,reward=cert' -> 'knockoff (adaptive, cert)', 'copycat' -> 'copycat'."""
    name, params = config_parts(config_id)
    return f"{name} ({params})" if params else name


def config(config_id: str) -> dict[str, str]:
    """A configuration id for the template: its label (as name and parameters) and the raw id, which the
    page keeps in a title attribute so the exact id stays one hover away."""
    name, params = config_parts(config_id)
    return {"id": str(config_id), "label": config_label(config_id), "name": name, "params": params}


# ---------------------------------------------------------------- sections

def served_defence(summary: Mapping[str, Any]) -> str | None:
    """What a remote victim's endpoint says it serves the model behind (``stealcheck serve`` declares its
    defence in the metadata); None for an in-process victim."""
    victim = as_dict(summary.get("victim"))
    if victim.get("kind") != "remote":
        return None
    params = as_dict(as_dict(victim.get("endpoint")).get("parameters"))
    return str(params.get("defence") or "not declared by the endpoint")


def header_context(summary: Mapping[str, Any], data: RunData) -> dict[str, Any]:
    """Title, status badge, headline finding and the key facts of the run."""
    status = str(summary.get("status") or "unknown")
    victim = as_dict(summary.get("victim"))
    cells = as_dict(summary.get("cells"))
    facts = [
        ("Scenario", summary.get("scenario_name")),
        ("Victim", victim.get("description")),
        ("Endpoint's defence", data.served_defence),
        ("Victim test accuracy", fmt(victim.get("test_accuracy")) if victim.get("test_accuracy") is not None
         else None),
        ("Attacks × defences", f"{len(data.attacks)} × {len(data.defences)}" if data.attacks else None),
        # the budgets measured (attacks may have budgets of their own), else the scenario's
        ("Query budgets", ", ".join(fmt_budget(b) for b in data.budgets or as_list(summary.get("budgets"))) or None),
        ("Seeds", ", ".join(str(s) for s in as_list(summary.get("seeds"))) or None),
        ("Test samples (n)", f"{data.test_size:,}" if data.test_size else "n unknown"),
        ("Cells done", f"{cells.get('done', DASH)} / {cells.get('total', DASH)}" if cells else None),
        ("Finished", fmt_time(summary.get("finished_at")) if summary.get("finished_at") else None),
        ("Wall time", fmt_duration(summary.get("wall_seconds")) if summary.get("wall_seconds") is not None
         else None),
    ]
    return {
        "title": summary.get("title") or summary.get("scenario_name") or "stealcheck report",
        "description": str(summary.get("description") or "").strip(),
        "status": status,
        "status_style": STATUS_STYLES.get(status, "info"),
        "error": summary.get("error"),
        "headline": headline(data),
        "facts": [(k, v) for k, v in facts if v not in (None, "")],
        "version": summary.get("stealcheck_version"),
    }


def headline(data: RunData) -> str | None:
    """The key finding: how well the strongest attack copies the undefended victim, and what each defence
    does to *that same attack at the same budget*.

    Comparing like with like matters: a defence compared with a different attack, or with another
    budget, says nothing about the defence. A defence is called effective only when its fidelity lies
    below the baseline's beyond the uncertainty (non-overlapping intervals, :func:`compare`),
    and "the most effective" only when it also beats every other defence beyond the uncertainty; ties are
    named as ties. Only attacks measured against every defence are considered in a partial run.
    """
    top = data.top_budget_of
    measured = [a for a in data.attacks
                if all(math.isfinite(data.cell(d, a, top(a), FIDELITY)[0]) for d in data.defences)]
    at = data.at_top_budget()
    base = data.baseline
    if base is None:
        scored = [(data.cell(d, a, top(a), FIDELITY)[0], a, d) for a in measured for d in data.defences]
        if not scored:
            return None
        _, a, d = max(scored)
        return (f"{at}, the closest copy comes from {config_label(a)} behind {config_label(d)}: fidelity "
                f"{fmt_estimate(data.estimate(d, a, top(a), FIDELITY))}. The run has no undefended baseline "
                f"(defence 'none'), so no defence can be judged against it.")
    attacks = measured or [a for a in data.attacks if math.isfinite(data.cell(base, a, top(a), FIDELITY)[0])]
    if not attacks:
        return None
    strongest = max(attacks, key=lambda a: data.cell(base, a, top(a), FIDELITY)[0])
    budget = top(strongest)
    ref = data.estimate(base, strongest, budget, FIDELITY)
    n_text = f"n = {data.test_size:,}" if data.test_size else "n unknown"
    target = ("the undefended victim" if data.served_defence is None else
              f"the victim as its endpoint serves it (behind its own defence: {data.served_defence})")
    parts = [f"{at}, the strongest attack, {config_label(strongest)}, copies {target} with "
             f"fidelity {fmt_estimate(ref)} ({n_text})."]
    effects = {d: data.estimate(d, strongest, budget, FIDELITY) for d in data.defences
               if d != base and data.cell(d, strongest, budget, FIDELITY)[2]}
    if not effects:
        return parts[0]
    verdicts = {d: compare(e, ref) for d, e in effects.items()}
    if all(v is None for v in verdicts.values()):
        lowest = min(effects, key=lambda d: effects[d].mean)
        parts.append(f"Against the same attack and budget, {config_label(lowest)} gives the lowest fidelity, "
                     f"{fmt(effects[lowest].mean)} ({effects[lowest].mean - ref.mean:+.3f}); without the test-set "
                     f"size (n unknown) no difference can be called significant.")
        return " ".join(parts)
    effective = sorted((d for d, v in verdicts.items() if v == "lower"), key=lambda d: effects[d].mean)
    same = "Against the same attack and budget"
    if effective:
        best = effective[0]
        tied = [best] + [d for d in effective[1:] if overlap(effects[d], effects[best])]
        cost = data.utility_value(best, "victim_accuracy") - data.utility_value(base, "victim_accuracy")
        cost_text = f", while honest users' accuracy changes by {cost:+.3f}" if math.isfinite(cost) else ""
        lowered = f"{fmt_estimate(effects[best])} ({effects[best].mean - ref.mean:+.3f}"
        if len(tied) > 1:
            parts.append(f"{same}, {join_labels(tied)} lower fidelity beyond the uncertainty "
                         f"({'; '.join(f'{config_label(d)} {fmt_estimate(effects[d])}' for d in tied)}); their "
                         f"intervals overlap, so none is clearly the most effective.")
        elif not any(overlap(effects[d], effects[best]) for d in effects if d != best):
            parts.append(f"{same}, the most effective defence, {config_label(best)}, lowers fidelity to "
                         f"{lowered}, beyond the uncertainty){cost_text}.")
        else:  # effective, but its interval overlaps a defence that is not: it cannot be ranked above it
            parts.append(f"{same}, {'only ' if len(effective) == 1 else ''}{config_label(best)} lowers fidelity "
                         f"beyond the uncertainty, to {lowered}){cost_text}.")
        others = [d for d in effective if d not in tied]
        if others:
            parts.append(f"{join_labels(others)} also lower{'s' if len(others) == 1 else ''} it significantly.")
    no_effect = [d for d, v in verdicts.items() if v == "tie"]
    if no_effect:
        parts.append(f"No significant effect on this attack: {join_labels(no_effect)}.")
    helped = [d for d, v in verdicts.items() if v == "higher"]
    if helped:
        parts.append(f"Fidelity is significantly higher than undefended behind {join_labels(helped)}.")
    if effective:  # the attacker may switch attacks: say where the leading defence does nothing
        evaded = [a for a in measured if a != strongest
                  and compare(data.estimate(effective[0], a, top(a), FIDELITY),
                              data.estimate(base, a, top(a), FIDELITY)) in ("tie", "higher")]
        if evaded:
            parts.append(f"But {config_label(effective[0])} has no significant effect on {join_labels(evaded)}.")
    return " ".join(parts)


def join_labels(ids: Iterable[str]) -> str:
    """Readable labels as 'a', 'a and b', 'a, b and c'."""
    labels = [config_label(i) for i in ids]
    return " and ".join(labels) if len(labels) < 3 else ", ".join(labels[:-1]) + " and " + labels[-1]


def gates_context(gates: Any, config_ids: Iterable[str] = ()) -> dict[str, Any] | None:
    """The expectation gates as table rows, with a pass count; None when the scenario set none.

    The runner's detail text names configurations by id; they are shown by label (:func:`relabel`),
    and the raw text stays in the cell's title.
    """
    if not isinstance(gates, list) or not gates:
        return None
    rows = []
    for g in gates:
        g = g if isinstance(g, dict) else {}
        lo, hi = g.get("min"), g.get("max")
        if lo is not None and hi is not None:
            bounds = f"{fmt_value(lo)} ≤ {g.get('metric', '?')} ≤ {fmt_value(hi)}"
        elif lo is not None:
            bounds = f"{g.get('metric', '?')} ≥ {fmt_value(lo)}"
        elif hi is not None:
            bounds = f"{g.get('metric', '?')} ≤ {fmt_value(hi)}"
        else:
            bounds = str(g.get("metric") or DASH)
        rows.append({"name": g.get("name") or g.get("metric") or "(unnamed gate)", "bounds": bounds,
                     "passed": bool(g.get("passed")), "detail": relabel(str(g.get("detail") or DASH), config_ids),
                     "raw_detail": str(g.get("detail") or "")})
    passed = sum(r["passed"] for r in rows)
    return {"rows": rows, "passed": passed, "total": len(rows)}


def relabel(text: str, config_ids: Iterable[str]) -> str:
    """``text`` with every configuration id it names replaced by its label (longest ids first, whole ids only)."""
    ids = sorted({str(i) for i in config_ids if config_label(i) != str(i)}, key=len, reverse=True)
    if not ids:
        return text
    pattern = re.compile(r"(?<![\w:=,.])(" + "|".join(map(re.escape, ids)) + r")(?![\w=])")
    return pattern.sub(lambda m: config_label(m.group(1)), text)


def summary_table(data: RunData) -> dict[str, Any] | None:
    """Attack × defence at each attack's largest budget: fidelity and thief accuracy with their intervals,
    and each defence's effect against the same attack undefended.

    A cell is flagged as the most effective defence against its attack only when it is significantly
    below the baseline and its interval overlaps no other defence's: never a tie, never the baseline.
    """
    if data.top_budget is None:
        return None
    rows = []
    for a in data.attacks:
        budget = data.top_budget_of(a)
        ref = data.estimate(data.baseline, a, budget, FIDELITY) if data.baseline else None
        fids = {d: data.estimate(d, a, budget, FIDELITY) for d in data.defences}
        cells = []
        for d in data.defences:
            fid, acc = fids[d], data.estimate(d, a, budget, ACCURACY)
            cells.append({"fidelity": fmt(fid.mean), "fidelity_ci": fmt_interval(fid),
                          "accuracy": fmt_estimate(acc), "effect": effect_text(d, fid, ref, data.baseline),
                          "best": False, "missing": fid.seeds == 0 and acc.seeds == 0})
        measured = {d: e for d, e in fids.items() if math.isfinite(e.mean)}
        candidates = [d for d in measured if d != data.baseline and ref is not None
                      and compare(measured[d], ref) == "lower"]
        if candidates:
            best = min(candidates, key=lambda d: measured[d].mean)
            if not any(overlap(measured[best], measured[d]) for d in measured if d != best):
                cells[data.defences.index(best)]["best"] = True
        rows.append({"attack": config(a), "cells": cells, "budget": fmt_budget(budget)})
    return {"budget": data.at_top_budget(), "defences": [config(d) for d in data.defences],
            "baseline": data.baseline, "rows": rows, "seeds": data.seed_count(),
            "test_size": f"{data.test_size:,}" if data.test_size else None,
            "interval_note": interval_note(data.test_size, data.seed_count())}


def effect_text(defence: str, fid: Estimate, ref: Estimate | None, baseline: str | None) -> dict[str, str]:
    """One summary cell's comparison with the same attack undefended: the change and whether it is
    beyond the uncertainty ('kind' picks the style: base, sig, ns, unknown)."""
    if defence == baseline:
        return {"text": "baseline", "kind": "base"}
    if ref is None or not (math.isfinite(fid.mean) and math.isfinite(ref.mean)):
        return {"text": "", "kind": "unknown"}
    delta = f"{fid.mean - ref.mean:+.3f} vs baseline"
    verdict = compare(fid, ref)
    if verdict is None:
        return {"text": f"{delta} (uncertainty unknown)", "kind": "unknown"}
    if verdict == "lower":
        return {"text": f"{delta}, significant", "kind": "sig"}
    if verdict == "higher":
        return {"text": f"{delta}, significantly higher", "kind": "ns"}
    return {"text": f"{delta}: no significant effect", "kind": "ns"}


def figures(data: RunData, colours: Mapping[str, str], victim_accuracy: Any,
            timing_note: str) -> list[dict[str, str]]:
    """Budget curves (fidelity, then thief accuracy) with their interval bands, and attack wall time, as inline SVG."""
    out = []
    labels = {i: config_label(i) for i in data.attacks + data.defences}
    specs = [(FIDELITY, "fidelity", "Fidelity: agreement with the victim's labels on the test set", None, ""),
             (ACCURACY, "thief accuracy", "Thief accuracy on the test set's true labels",
              victim_accuracy, "victim (undefended)")]
    for metric, label, caption, ref, ref_label in specs:
        curves = budget_curves(data, metric)
        if curves:
            ref_value = float(ref) if isinstance(ref, (int, float)) else None
            out.append({"caption": caption, "note": "", "svg": plots.budget_curves_svg(
                curves, metric_label=label, colours=colours, baseline=data.baseline, labels=labels,
                reference=ref_value, reference_label=ref_label, prefix=f"fig-{metric}")})
    seconds = seconds_by_attack(data)
    if seconds:
        at = data.at_top_budget()
        out.append({"caption": f"Attack wall time, {at[0].lower()}{at[1:]} (thief training included), mean over seeds",
                    "note": timing_note,
                    "svg": plots.attack_time_svg(seconds, colours=colours, budget_label=at[0].lower() + at[1:],
                                                 labels=labels, prefix="fig-time")})
    return out


def budget_curves(data: RunData, metric: str) -> dict[str, dict[str, list[tuple[float, float, float, float]]]]:
    """curves[attack][defence] = [(budget, mean, low, high), ...] for ``metric`` (low/high: the cell's
    interval, NaN when it has none); empty when the metric was not measured."""
    rows = data.agg[data.agg["metric"] == metric]
    curves: dict[str, dict[str, list]] = {}
    for a in data.attacks:
        for d in data.defences:
            sel = rows[(rows["attack"] == a) & (rows["defence"] == d)]
            points = []
            for b in sorted(int(b) for b in sel["budget"]):
                e = data.estimate(d, a, b, metric)
                points.append((float(b), e.mean, e.low, e.high))
            if points:
                curves.setdefault(a, {})[d] = points
    return curves


def seconds_by_attack(data: RunData) -> dict[str, dict[str, float]]:
    """Mean attack wall time at the largest budget: seconds[attack][defence]."""
    out: dict[str, dict[str, float]] = {}
    for a in data.attacks:
        for d in data.defences:
            mean = data.cell(d, a, data.top_budget_of(a), SECONDS)[0]
            if math.isfinite(mean):
                out.setdefault(a, {})[d] = mean
    return out


def seconds_table(data: RunData) -> dict[str, Any] | None:
    """The wall-time figure's numbers, as a small attack × defence table."""
    seconds = seconds_by_attack(data)
    if not seconds:
        return None
    return {"defences": [config(d) for d in data.defences],
            "rows": [{"attack": config(a), "cells": [fmt_duration(seconds[a].get(d)) for d in data.defences]}
                     for a in seconds]}


def timing_note(summary: Mapping[str, Any]) -> str:
    """The caveat every timing carries, naming the machine when the summary recorded it."""
    platform = as_dict(summary.get("platform"))
    cpus = platform.get("cpus") or platform.get("cpu_count")
    machine = ", ".join(str(v) for v in (platform.get("system"), f"{cpus} CPUs" if cpus else None) if v)
    return TIMING_NOTE + (f" Measured on: {machine}." if machine else "")


def utility_table(data: RunData) -> dict[str, Any] | None:
    """Per defence, what honest users pay: accuracy, distortion, changed labels (and change vs baseline)."""
    if data.utility.empty:
        return None
    metrics = data.utility_metrics
    base_acc = data.utility_value(data.baseline, "victim_accuracy") if data.baseline else math.nan
    show_delta = "victim_accuracy" in metrics and math.isfinite(base_acc)
    rows = []
    for d in data.defences:
        values = [data.utility_value(d, m) for m in metrics]
        if not any(math.isfinite(v) for v in values):
            continue
        # The baseline's own change is zero by definition: show a dash rather than a meaningless +0.000.
        delta = data.utility_value(d, "victim_accuracy") - base_acc if show_delta and d != data.baseline else math.nan
        rows.append({"defence": config(d), "baseline": d == data.baseline,
                     "cells": [fmt_metric(m, v) for m, v in zip(metrics, values)],
                     "delta": f"{delta:+.3f}" if math.isfinite(delta) else DASH})
    return {"columns": [column(m) for m in metrics], "rows": rows, "show_delta": show_delta,
            "has_timing": any(m.startswith("latency") for m in metrics)}


def full_table(data: RunData) -> dict[str, Any] | None:
    """Every extraction metric, mean over seeds, per defence × attack × budget; fidelity and accuracy
    with their intervals."""
    if data.agg.empty:
        return None
    metrics = data.extraction_metrics
    rows = []
    for d in data.defences:
        for a in data.attacks:
            for b in data.budgets:
                cells = [data.cell(d, a, b, m) for m in metrics]
                if all(n == 0 for _, _, n in cells):
                    continue
                rows.append({"defence": config(d), "attack": config(a), "budget": fmt_budget(b),
                             "seeds": max(n for _, _, n in cells),
                             "cells": [{"text": fmt(mean), "ci": fmt_interval(data.estimate(d, a, b, m))}
                                       if m in PROPORTION_METRICS else {"text": fmt_metric(m, mean), "ci": ""}
                                       for m, (mean, _, _) in zip(metrics, cells)]})
    return {"columns": [column(m) for m in metrics], "rows": rows,
            "interval_note": interval_note(data.test_size, data.seed_count())}


def column(metric: str) -> dict[str, str]:
    return {"name": metric, "label": METRIC_LABELS.get(metric, metric), "description": metric_description(metric)}


def metric_description(name: str) -> str:
    """The registered metric's one-line description ('' for a metric this installation does not know)."""
    if name in SERVICE_DESCRIPTIONS:
        return SERVICE_DESCRIPTIONS[name]
    try:
        from stealcheck import registry

        return registry.metrics.get(name).description
    except Exception:  # an unknown metric, or plugins that fail to import, must not stop the report
        return ""


def glossary(metrics: Iterable[str]) -> list[dict[str, str]]:
    """Each metric's description, once: service metrics (answered share, latency) are reported both per
    attack and for honest users, and so arrive twice."""
    return [c for c in (column(m) for m in dict.fromkeys(metrics)) if c["description"]]


# ---------------------------------------------------------------- detection track

DETECTION_COLUMNS = [("auroc", "AUROC", True), ("aupr", "AUPR", True), ("fpr_at_95_tpr", "FPR@95%TPR", False)]
DETECTION_ALL = [("auroc", "AUROC", True), ("aupr", "AUPR", True), ("fpr_at_95_tpr", "FPR@95%TPR", False),
                 ("fpr_at_90_tpr", "FPR@90%TPR", False), ("tpr_at_1_fpr", "TPR@1%FPR", True)]
PER_CLIENT_METRICS = ("benign_flagged", "clients_flagged", "queries_to_flag")
DETECTION_BASE_METRICS = {m for m, _, _ in DETECTION_ALL} | set(PER_CLIENT_METRICS)
SAME_PLUGINS = {"same": "SAME (input and label)", "same_x": "SAME-X (input only)", "same_y": "SAME-Y (label only)"}
ACTIVE_PLUGINS = {"reject", "pow", "misinformation"}
_CLIENTS = re.compile(r"^(clients_flagged|queries_to_flag)@(\d+)_clients$")


def base_metric(metric: str) -> str:
    """'auroc@0.1' -> 'auroc'; 'clients_flagged@4_clients' -> 'clients_flagged'."""
    return metric.split("@", 1)[0]


class DetectionData:
    """The rows of kinds 'detection' (detector × attack × budget) and 'detector' (cost per detector)."""

    def __init__(self, cells: dict[tuple[str, str, int, str], float], cost: dict[str, dict[str, float]],
                 detectors: list[str], attacks: list[str], budgets: list[int]):
        self.cells, self.cost = cells, cost
        self.detectors, self.attacks, self.budgets = detectors, attacks, budgets

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, summary: Mapping[str, Any]) -> "DetectionData":
        frame = frame.copy()
        for col in ("kind", "defence", "attack", "metric"):
            frame[col] = frame[col].fillna("").astype(str) if col in frame else ""
        for col in ("budget", "value"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else np.nan
        det = frame[(frame["kind"] == "detection") & frame["budget"].notna()
                    & frame["metric"].map(lambda m: base_metric(m) in DETECTION_BASE_METRICS).astype(bool)]
        cells: dict[tuple[str, str, int, str], float] = {}
        if len(det):
            means = det.groupby(["defence", "attack", "budget", "metric"], sort=False)["value"].mean()
            cells = {(d, a, int(b), m): float(v) for (d, a, b, m), v in means.items()}
        cost_rows = frame[frame["kind"] == "detector"]
        cost: dict[str, dict[str, float]] = {}
        for d, m, v in cost_rows[["defence", "metric", "value"]].itertuples(index=False):
            cost.setdefault(d, {})[m] = float(v)
        detectors = ordered(as_dict(summary.get("detectors")), list(det["defence"]) + list(cost))
        attacks = ordered(as_dict(summary.get("attacks")), det["attack"])
        budgets = sorted({int(b) for b in det["budget"].unique()})
        return cls(cells, cost, detectors, attacks, budgets)

    @property
    def empty(self) -> bool:
        return not self.cells

    def value(self, detector: str, attack: str, budget: int | None, metric: str) -> float:
        return self.cells.get((detector, attack, budget, metric), math.nan)

    def has(self, detector: str, metric_base: str) -> bool:
        return any(d == detector and base_metric(m) == metric_base for d, _, _, m in self.cells)


#: shown next to an AUROC below 50%
INVERTED_NOTE = "below chance: inverted"
INVERTED_TITLE = ("An AUROC below 50% means the detector ranks this attack's queries as more benign than honest "
                  "ones: its score points the wrong way for this attack.")


def detection_cell(metric: str, value: float) -> dict[str, str]:
    """A detection metric in percent, with the inverted-ranking note for an AUROC below 50%."""
    inverted = base_metric(metric) == "auroc" and math.isfinite(value) and value < 0.5
    return {"text": fmt_pct(value), "note": INVERTED_NOTE if inverted else ""}


def fmt_pct(value: float, digits: int = 1) -> str:
    """A rate as a percentage without the sign ('93.4'); a dash for NaN."""
    return fmt(100.0 * value, digits) if isinstance(value, (int, float)) and math.isfinite(value) else DASH


def fmt_ms(value: Any) -> str:
    """A latency in milliseconds to about three significant digits ('0.0441', '2.35', '118')."""
    x = finite_float(value)
    if x is None:
        return DASH
    return fmt(x, 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2 if abs(x) >= 1 else 3 if abs(x) >= 0.1 else 4)


def fmt_ratio(value: float) -> str:
    """A malicious ratio for a header: 0.1 -> '10%', 0.005 -> '0.5%'."""
    return f"{100 * value:g}%"


def detection_context(det: DetectionData, summary: Mapping[str, Any],
                      scores: Mapping[tuple[str, str, int], Mapping[str, np.ndarray]],
                      data: "RunData | None" = None) -> dict[str, Any] | None:
    """Every detection sub-section; None when the run has no detection rows (the section is not shown)."""
    if det.empty:
        return None
    info = as_dict(summary.get("detectors"))
    per_client = [d for d in det.detectors if as_dict(info.get(d)).get("per_client") or det.has(d, "clients_flagged")]
    scored = [d for d in det.detectors if d not in per_client and det.has(d, "auroc")]
    spec = as_dict(summary.get("detection"))
    top = det.budgets[-1] if det.budgets else None
    colours = plots.defence_colours(scored, None)
    same = [d for d in scored if as_dict(info.get(d)).get("plugin") in SAME_PLUGINS]
    return {
        "setup": detection_setup(spec, det),
        "top_budget": fmt_budget(top),
        "roc": roc_figure(det, scored, scores, top, colours),
        "comparison": [comparison_table(det, scored, b, f"at {fmt_budget(b)} attack queries") for b in det.budgets
                       if any(math.isfinite(det.value(d, a, b, "auroc")) for d in scored for a in det.attacks)],
        "cost": cost_table(det, info),
        "signals": signals_table(info),
        "ratios": ratio_table(det, scored, top, spec.get("malicious_ratio")),
        "ablation": comparison_table(det, same, top, "", labels={d: SAME_PLUGINS[info[d]["plugin"]] for d in same})
        if len(same) >= 2 else None,
        "per_client": per_client_table(det, per_client),
        "stealth": stealth_context(det, data, summary, scored, info) if data is not None else None,
        "all_metrics": all_detection_metrics(det, scored),
    }


#: AUROC below which an attack counts as stealthy in the adaptive-attacker summary
STEALTH_AUROC = 0.70


def stealth_context(det: DetectionData, data: "RunData", summary: Mapping[str, Any], scored: list[str],
                    info: Mapping[str, Any]) -> dict[str, Any] | None:
    """Fidelity of each attack's copy (under the baseline defence) against how well detectors catch its
    queries at the same budget: the adaptive attacker's trade-off. Shown when the scenario varies an
    attack's stealth (two or more attacks of one plugin, e.g. smaller JBDA steps or a Knockoff pool cut
    by the detector it avoids)."""
    baseline = data.baseline or (data.defences[0] if data.defences else None)
    plugins = as_dict(summary.get("attacks"))
    families: dict[str, list[str]] = {}
    for a in det.attacks:
        families.setdefault(str(plugins.get(a, a)), []).append(a)
    if baseline is None or not any(len(v) >= 2 for v in families.values()):
        return None
    shown = [d for d in scored if as_dict(info.get(d)).get("plugin") in ("fusion", "same")] or scored[:1]
    rows, points = [], {d: {} for d in shown}
    for family, attacks in families.items():
        for a in attacks:
            for b in det.budgets:
                fid = data.cell(baseline, a, b, FIDELITY)
                aurocs = [det.value(d, a, b, "auroc") for d in shown]
                if not fid[2] or not any(math.isfinite(v) for v in aurocs):
                    continue
                rows.append({"family": family, "attack": config(a), "budget": fmt_budget(b), "fidelity": fmt(fid[0]),
                             "aurocs": [detection_cell("auroc", v) for v in aurocs], "values": (fid[0], aurocs)})
                for d, v in zip(shown, aurocs):
                    if math.isfinite(v):
                        points[d].setdefault(f"{family} @ {fmt_budget(b)}", []).append((v, fid[0], config_label(a)))
    if not rows:
        return None
    best = []
    for j, d in enumerate(shown):
        under = [(r["values"][0], r["attack"]["label"], r["budget"]) for r in rows
                 if math.isfinite(r["values"][1][j]) and r["values"][1][j] < STEALTH_AUROC]
        top = max(under) if under else None
        best.append({"detector": config(d), "text": (f"{fmt(top[0])} ({top[1]}, {top[2]} queries)" if top
                                             else f"no attack stays below {fmt_pct(STEALTH_AUROC, 0)}% AUROC")})
    for r in rows:
        r.pop("values")
    return {"detectors": [config(d) for d in shown], "defence": config(baseline), "rows": rows, "best": best,
            "threshold": fmt_pct(STEALTH_AUROC, 0),
            "figure": plots.stealth_svg(points, labels={d: config_label(d) for d in shown}, prefix="stealth")}


def detection_setup(spec: Mapping[str, Any], det: DetectionData) -> list[tuple[str, str]]:
    """What was scored against what: the benign set, calibration split, budgets and mix."""
    rows = [
        ("benign queries scored", f"{spec['benign_samples']}" + (f" ({spec['benign']})" if spec.get("benign") else "")
         if spec.get("benign_samples") is not None else spec.get("benign")),
        ("calibration samples", fmt_value(spec.get("calibration_samples")) if "calibration_samples" in spec else None),
        ("outlier set (OE, EDM)", spec.get("outliers")),
        ("attack queries scored", ", ".join(fmt_budget(b) for b in as_list(spec.get("budgets")) or det.budgets)),
        ("malicious ratio", fmt_ratio(spec["malicious_ratio"]) if isinstance(spec.get("malicious_ratio"), (int, float))
         else None),
        ("ratio sweep", ", ".join(fmt_ratio(r) for r in as_list(spec.get("ratio_sweep"))
                                  if isinstance(r, (int, float))) or None),
        ("clients per attack (per-client detectors)", fmt_value(spec.get("prada_clients"))
         if spec.get("prada_clients") else None),
    ]
    return [(k, str(v)) for k, v in rows if v not in (None, "", DASH)]


def roc_figure(det: DetectionData, detectors: list[str], scores: Mapping, budget: int | None,
               colours: Mapping[str, str]) -> str | None:
    """ROC curves at the largest detection budget: a panel per attack, a line per detector."""
    if budget is None or not scores:
        return None
    try:
        from stealcheck.detection import roc_points
    except Exception:
        return None
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for a in det.attacks:
        for d in detectors:
            s = scores.get((d, a, budget))
            if not s:
                continue
            try:
                fpr, tpr = roc_points(s["benign"], s["attack"])
            except Exception:  # empty or non-finite scores: no curve for this pair
                continue
            curves.setdefault(a, {})[d] = (np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float))
    if not curves:
        return None
    labels = {i: config_label(i) for i in list(curves) + detectors}
    return plots.roc_curves_svg(curves, colours=colours, labels=labels, prefix="fig-roc")


def comparison_table(det: DetectionData, detectors: list[str], budget: int | None, title: str,
                     labels: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Rows = detector, columns = attack × (AUROC, AUPR, FPR@95%TPR) in percent; the best per column flagged."""
    if budget is None or not detectors:
        return None
    attacks = [a for a in det.attacks if any(math.isfinite(det.value(d, a, budget, "auroc")) for d in detectors)]
    if not attacks:
        return None
    columns = [(a, m, higher) for a in attacks for m, _, higher in DETECTION_COLUMNS]
    best = {}
    for a, m, higher in columns:
        values = [v for v in (det.value(d, a, budget, m) for d in detectors) if math.isfinite(v)]
        if len(values) > 1:
            best[(a, m)] = max(values) if higher else min(values)
    rows = []
    for d in detectors:
        cells = []
        for a, m, _ in columns:
            v = det.value(d, a, budget, m)
            cells.append({**detection_cell(m, v), "best": (a, m) in best and math.isfinite(v)
                          and math.isclose(v, best[(a, m)], abs_tol=1e-12)})
        rows.append({"detector": config(d), "label": (labels or {}).get(d, ""), "cells": cells})
    return {"title": title, "budget": fmt_budget(budget), "attacks": [config(a) for a in attacks],
            "metrics": [label for _, label, _ in DETECTION_COLUMNS], "rows": rows}


def cost_table(det: DetectionData, info: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per detector: training time, scoring vs victim inference time, and the accuracy users are served."""
    detectors = [d for d in det.detectors if d in det.cost]
    if not detectors:
        return None
    rows = []
    for d in detectors:
        c, meta = det.cost[d], as_dict(info.get(d))
        fit = c.get("fit_seconds", math.nan)
        rows.append({"detector": config(d), "plugin": meta.get("plugin") or "",
                     "fit": fmt_duration(fit) if math.isfinite(fit) else DASH,
                     "from_cache": bool(meta.get("from_cache")),
                     "score_ms": fmt(c.get("score_ms_per_query"), 4),
                     "victim_ms": fmt(c.get("victim_ms_per_query"), 4),
                     "ratio": f"{fmt(c.get('score_cost_ratio'), 2)}×"
                     if math.isfinite(c.get("score_cost_ratio", math.nan)) else DASH,
                     "served": fmt(c.get("served_accuracy")),
                     "replaces_victim": bool(meta.get("replaces_victim")),
                     "per_client": bool(meta.get("per_client"))})
    return {"rows": rows, "any_replaces": any(r["replaces_victim"] for r in rows),
            "any_cached": any(r["from_cache"] for r in rows)}


def signals_table(info: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The signals each fusion detector actually combined, and those it left out.

    Fusion drops a default signal it cannot compute for the victim (``feature_knn`` without an
    ``nn.Linear`` head, ``energy`` without logits), so the scenario alone does not say what was used.
    The run records it per detector in ``summary["detectors"][id]``: ``signals`` (the names used, in
    order) and optionally ``signals_dropped`` (``{name: reason}``, or a list of names). A fusion
    detector without ``signals`` is shown as "not recorded" rather than guessed from the scenario.
    """
    rows = []
    for d, meta in info.items():
        meta = as_dict(meta)
        if meta.get("plugin") != "fusion" and "signals" not in meta:
            continue
        used = [str(x) for x in as_list(meta.get("signals"))]
        dropped = meta.get("signals_dropped")
        dropped = ([f"{k} ({v})" if v else str(k) for k, v in dropped.items()] if isinstance(dropped, dict)
                   else [str(x) for x in as_list(dropped)])
        rows.append({"detector": config(d), "used": ", ".join(used) if used else None,
                     "dropped": ", ".join(dropped)})
    return rows or None


def ratio_table(det: DetectionData, detectors: list[str], budget: int | None,
                main_ratio: Any = None) -> dict[str, Any] | None:
    """AUROC and AUPR at each malicious ratio of the sweep, per detector × attack, at ``budget``; the
    headline ratio (the unsuffixed metrics) is added as a column for reference."""
    ratios = sorted({float(m.split("@", 1)[1]) for d, a, b, m in det.cells
                     if b == budget and d in detectors and base_metric(m) in ("auroc", "aupr") and "@" in m
                     and _is_number(m.split("@", 1)[1])})
    if not ratios:
        return None
    keys = {r: f"@{r:g}" for r in ratios}
    if isinstance(main_ratio, (int, float)) and 0 < main_ratio < 1 and float(main_ratio) not in keys:
        keys[float(main_ratio)] = ""
        ratios = sorted(keys)
    rows = []
    for d in detectors:
        for a in det.attacks:
            cells = [detection_cell(m, det.value(d, a, budget, f"{m}{keys[r]}")) for r in ratios
                     for m in ("auroc", "aupr")]
            if all(c["text"] == DASH for c in cells):
                continue
            rows.append({"detector": config(d), "attack": config(a), "cells": cells})
    return {"ratios": [fmt_ratio(r) for r in ratios], "budget": fmt_budget(budget), "rows": rows} if rows else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def per_client_table(det: DetectionData, detectors: list[str]) -> dict[str, Any] | None:
    """Per-client detectors (PRADA): share of attacking clients flagged and queries until the first flag,
    with the attack's queries from 1 client and spread over N clients; and whether the benign client was flagged."""
    if not detectors:
        return None
    counts = {1}
    for d, _, _, m in det.cells:
        match = _CLIENTS.match(m)
        if d in detectors and match:
            counts.add(int(match.group(2)))
    counts_sorted = sorted(counts)
    rows = []
    for d in detectors:
        for a in det.attacks:
            for b in det.budgets:
                def get(metric: str, n: int) -> float:
                    return det.value(d, a, b, metric if n == 1 else f"{metric}@{n}_clients")
                flagged = [get("clients_flagged", n) for n in counts_sorted]
                queries = [get("queries_to_flag", n) for n in counts_sorted]
                benign = det.value(d, a, b, "benign_flagged")
                if all(not math.isfinite(v) for v in flagged + queries + [benign]):
                    continue
                rows.append({"detector": config(d), "attack": config(a), "budget": fmt_budget(b),
                             "benign": DASH if not math.isfinite(benign) else ("yes" if benign > 0 else "no"),
                             "benign_bad": math.isfinite(benign) and benign > 0,
                             "cells": [(fmt_pct(f, 0), f"{q:,.0f}" if math.isfinite(q) else
                                        ("never" if math.isfinite(f) else DASH))
                                       for f, q in zip(flagged, queries)]})
    if not rows:
        return None
    return {"clients": counts_sorted, "rows": rows}


def all_detection_metrics(det: DetectionData, detectors: list[str]) -> dict[str, Any] | None:
    """Every score-based detection metric per detector × attack × budget, in percent."""
    rows = []
    for d in detectors:
        for a in det.attacks:
            for b in det.budgets:
                values = [det.value(d, a, b, m) for m, _, _ in DETECTION_ALL]
                if any(math.isfinite(v) for v in values):
                    rows.append({"detector": config(d), "attack": config(a), "budget": fmt_budget(b),
                                 "cells": [detection_cell(m, v) for (m, _, _), v in zip(DETECTION_ALL, values)]})
    return {"columns": [label for _, label, _ in DETECTION_ALL], "rows": rows} if rows else None


def active_defences_table(data: RunData, summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """Honest users' service (answered share, latency) next to the attacker's, and the copy's fidelity.

    Shown when a defence answers less than every query or is an active one (reject, pow, misinformation).
    """
    plugins = as_dict(summary.get("defences"))
    shares = [data.utility_value(d, "answered_share") for d in data.defences]
    shares += [data.cell(d, a, data.top_budget_of(a), "answered_share")[0] for d in data.defences for a in data.attacks]
    active = any(plugins.get(d) in ACTIVE_PLUGINS for d in data.defences)
    if not (active or any(math.isfinite(s) and s < 1.0 - 1e-12 for s in shares)):
        return None
    attacks = [a for a in data.attacks
               if any(data.cell(d, a, data.top_budget_of(a), m)[2] for d in data.defences
                      for m in ("answered_share", FIDELITY))]
    rows = []
    for d in data.defences:
        honest = [data.utility_value(d, m) for m in SERVICE_METRICS]
        per_attack = []
        for a in attacks:
            top = data.top_budget_of(a)
            share, lat = (data.cell(d, a, top, m)[0] for m in ("answered_share", "latency_mean_ms"))
            per_attack.append([fmt_pct(share), fmt_ms(lat), fmt_estimate(data.estimate(d, a, top, FIDELITY))])
        rows.append({"defence": config(d), "plugin": plugins.get(d, ""), "baseline": d == data.baseline,
                     "active": plugins.get(d) in ACTIVE_PLUGINS,
                     "honest": [fmt_pct(honest[0]), fmt_ms(honest[1]), fmt_ms(honest[2])], "attacks": per_attack})
    return {"attacks": [dict(config(a), budget=fmt_budget(data.top_budget_of(a))) for a in attacks],
            "rows": rows}


def provenance(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Everything needed to reproduce or audit the run: models, data, times, software, scenario."""
    def table(value: Any) -> list[tuple[str, str]]:
        return [(str(k), fmt_value(v)) for k, v in as_dict(value).items()]

    run = [
        ("stealcheck version", summary.get("stealcheck_version")),
        ("scenario file", summary.get("scenario_file")),
        ("run folder", summary.get("run_dir")),
        ("started", fmt_time(summary.get("started_at")) if summary.get("started_at") else None),
        ("finished", fmt_time(summary.get("finished_at")) if summary.get("finished_at") else None),
        ("wall time", fmt_duration(summary.get("wall_seconds")) if summary.get("wall_seconds") is not None else None),
        ("resumed", fmt_value(summary.get("resumed")) if "resumed" in summary else None),
        ("seeds", fmt_value(summary.get("seeds"))),
        ("budgets", ", ".join(fmt_budget(b) for b in as_list(summary.get("budgets"))) or None),
        ("data seed", fmt_value(summary.get("data_seed")) if "data_seed" in summary else None),
        ("git revision", summary.get("git_revision") or "not recorded"),
    ]
    configs = [(kind, config(config_id), plugin) for kind, key in (("attack", "attacks"), ("defence", "defences"))
               for config_id, plugin in as_dict(summary.get(key)).items()]
    return {
        "run": [(k, v) for k, v in run if v not in (None, "", DASH)],
        "victim": table(summary.get("victim")),
        "thief": table(summary.get("thief")),
        "configs": configs,
        "packages": table(summary.get("packages")),
        "platform": table(summary.get("platform")),
        "scenario_as_written": yaml_text(summary.get("scenario_as_written")),
        "scenario_resolved": yaml_text(summary.get("scenario_resolved")),
    }


def as_dict(value: Any) -> dict:
    """``value`` if it is a dict, else an empty one (summary keys of a failed run may be missing or null)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    """``value`` if it is a list, a one-item list for a scalar, empty for None."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _ReadableDumper(yaml.SafeDumper):
    """safe_dump, with multi-line strings (descriptions) as literal blocks instead of quoted runs."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value.strip("\n") or value.endswith("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def yaml_text(value: Any) -> str | None:
    """A scenario dict as YAML, in the order it was written."""
    if not value:
        return None
    try:
        return yaml.dump(value, Dumper=_ReadableDumper, sort_keys=False, allow_unicode=True,
                         default_flow_style=None, width=100)
    except yaml.YAMLError:
        return str(value)
