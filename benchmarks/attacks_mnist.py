"""Every extraction attack against one conv3 MNIST victim: fidelity and thief accuracy vs queries.

One run of the shipped `attacks_mnist` scenario, with two benchmark-only changes:
- evaluation on the 10,000-image MNIST test set from ../shared/data/mnist_test.npz when it exists
  (else the scenario's 1,000 mnist5k test digits);
- DFME and MAZE budgets from --data-free-budgets (default 100k, 500k, 2M queries).
Prints a table (attack, budget, queries, fidelity, accuracy, cumulative wall time) and the targets:
JBDA with 150 seeds and 6 rounds >= 80% thief accuracy; DFME >= 90% fidelity within 2M queries.

    python benchmarks/attacks_mnist.py [--data-free-budgets 100000,500000,2000000] [--only dfme maze]

--pool-attacks: the pool attacks only, with the scenario's thief recipe (the defaults): every
ActiveThief strategy against random KnockoffNets at 250, 500, 1,000 and 1,500 queries, mean and
standard deviation over --seeds, the thief's training time per checkpoint (the attack's wall time
since the previous checkpoint, queries included: they are a few ms), and the same attacks against
reverse sigmoid (beta 1, gamma 0.2, the quickstart's) and label-only over --defended-seeds. Targets:
the best pool attack >= 0.90 fidelity at 1,500 queries and >= 0.85 at 500; the best strategy ahead
of random KnockoffNets at every budget.

    python benchmarks/attacks_mnist.py --pool-attacks [--seeds 0,1,2] [--defended-seeds 0]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from stealcheck.results import read_results, read_summary
from stealcheck.runner import Execution, run_scenario
from stealcheck.scenario import build_scenario

MNIST_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist_test.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-free-budgets", default="100000,500000,2000000",
                    help="comma-separated checkpoints for dfme and maze")
    ap.add_argument("--only", nargs="+", default=None, help="attack ids to run (default: all)")
    ap.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--pool-attacks", action="store_true", help="ActiveThief strategies vs random KnockoffNets")
    ap.add_argument("--seeds", default="0,1,2", help="--pool-attacks: seeds of the undefended runs")
    ap.add_argument("--defended-seeds", default="0", help="--pool-attacks: seeds of the defended runs ('' = none)")
    ap.add_argument("--budgets", default="250,500,1000,1500", help="--pool-attacks: checkpoints")
    ap.add_argument("--workers", type=int, default=None, help="--pool-attacks: run the cells on a Dask LocalCluster "
                    "of this many processes (default: in this process)")
    ap.add_argument("--from-runs", nargs="+", default=None, help="--pool-attacks: print the tables from finished "
                    "run folders (undefended and defended runs of this mode, e.g. split over processes) instead of "
                    "running")
    ap.add_argument("--strategies", default="uncertainty,kcenter,dfal,random", help="--pool-attacks: ActiveThief "
                    "strategies")
    args = ap.parse_args()
    if args.pool_attacks:
        pool_attacks(args)
        return

    raw = yaml.safe_load((resources.files("stealcheck.scenarios") / "attacks_mnist.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["name"] = "attacks_mnist_benchmark"
    raw["expect"] = []
    if MNIST_TEST.exists():
        raw["data"]["test"] = {"source": "npz", "path": str(MNIST_TEST)}
    data_free = sorted(int(b) for b in args.data_free_budgets.split(","))
    for item in raw["attacks"]:
        if isinstance(item, dict) and item.get("plugin") in ("dfme", "maze"):
            item["budgets"] = data_free
    if args.only:
        keep = set(args.only)
        raw["attacks"] = [a for a in raw["attacks"] if _id(a) in keep]
    scenario = build_scenario(raw)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="attacks_mnist_")) / "run"
    start = time.perf_counter()
    run_scenario(scenario, out_dir=out, quiet=True, fresh=True)
    wall = time.perf_counter() - start

    summary = read_summary(out)
    frame = read_results(out)
    ext = frame[frame["kind"] == "extraction"]
    table = ext.pivot_table(index=["attack", "budget"], columns="metric", values="value", sort=False)
    table = table[["queries_used", "fidelity", "accuracy", "attack_seconds"]].reset_index()
    table["budget"] = table["budget"].astype(int)
    table["queries_used"] = table["queries_used"].astype(int)
    victim = summary["victim"]
    print(f"victim: {victim['description']}, test accuracy {victim['test_accuracy']:.4f} on "
          f"{victim['test_samples']} test images ({'MNIST test set, shared/data' if MNIST_TEST.exists() else 'mnist5k'})")
    print(f"thief: {summary['thief']['architecture']} {summary['thief']['arch_params']}; total wall time {wall:.0f} s; "
          f"run folder {out}")
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    jbda = table[(table["attack"] == "jbda") & (table["budget"] == 9600)]
    if len(jbda):
        acc = float(jbda["accuracy"].iloc[0])
        print(f"target JBDA (150 seeds, 6 rounds) thief accuracy >= 0.80: {acc:.3f} "
              f"({'met' if acc >= 0.80 else 'NOT met'})")
    dfme = table[table["attack"] == "dfme"]
    if len(dfme):
        best = dfme.loc[dfme["fidelity"].idxmax()]
        print(f"target DFME fidelity >= 0.90 within 2M queries: best {best['fidelity']:.3f} at "
              f"{int(best['budget']):,} queries ({'met' if best['fidelity'] >= 0.90 else 'NOT met'})")


REVERSE_SIGMOID = {"reverse_sigmoid": {"beta": 1.0, "gamma": 0.2}}


def _pool_scenario(defences: list, seeds: list[int], budgets: list[int], strategies: list[str]) -> dict:
    raw = yaml.safe_load((resources.files("stealcheck.scenarios") / "attacks_mnist.yaml").read_text())
    raw["name"] = "pool_attacks_mnist_benchmark"
    raw["expect"] = []
    if MNIST_TEST.exists():
        raw["data"]["test"] = {"source": "npz", "path": str(MNIST_TEST)}
    raw["attacks"] = [{"plugin": "knockoff", "id": "knockoff", "params": {"strategy": "random"}}] + [
        {"plugin": "activethief", "id": f"activethief:{s}", "params": {"strategy": s}} for s in strategies]
    raw["defences"], raw["seeds"], raw["budgets"] = defences, seeds, budgets
    return raw


def _run_pool(raw: dict, out: Path, workers: int | None) -> tuple[pd.DataFrame, dict, float]:
    start = time.perf_counter()
    execution = Execution(executor="dask", workers=workers) if workers else Execution()
    # cells already in the cache are reused: their rows, timings included, are those measured when computed
    run_scenario(build_scenario(raw), out_dir=out, quiet=True, execution=execution)
    wall = time.perf_counter() - start
    wide, summary = _read_pool(out)
    return wide, summary, wall


def _read_pool(out: Path) -> tuple[pd.DataFrame, dict]:
    """One extraction row per (defence, attack, seed, budget), with the time spent since the previous checkpoint."""
    frame = read_results(out)
    ext = frame[frame["kind"] == "extraction"].copy()
    ext["budget"] = ext["budget"].astype(int)
    wide = ext.pivot_table(index=["defence", "attack", "seed", "budget"], columns="metric", values="value").reset_index()
    wide = wide.sort_values(["defence", "attack", "seed", "budget"])
    # the thief's training time per checkpoint: attack wall time since the previous checkpoint of the cell
    wide["ckpt_seconds"] = wide.groupby(["defence", "attack", "seed"])["attack_seconds"].diff().fillna(
        wide["attack_seconds"])
    return wide, read_summary(out)


def pool_attacks(args) -> None:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    defended_seeds = [int(s) for s in args.defended_seeds.split(",") if s]
    budgets = sorted(int(b) for b in args.budgets.split(","))
    strategies = [s for s in args.strategies.split(",") if s]
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pool_attacks_"))
    attacks = ["knockoff"] + [f"activethief:{s}" for s in strategies]
    if args.from_runs:
        from_runs([Path(p) for p in args.from_runs], budgets, attacks)
        return
    if not seeds:  # the defended runs only
        _defended(None, base, defended_seeds, budgets, strategies, attacks, args.workers)
        return
    wide, summary, wall = _run_pool(_pool_scenario(["none"], seeds, budgets, strategies), base / "undefended",
                                   args.workers)
    report_undefended(wide, summary, wall, seeds, budgets, attacks, base / "undefended")
    if defended_seeds:
        _defended(wide, base, defended_seeds, budgets, strategies, attacks, args.workers)


def from_runs(folders: list[Path], budgets: list[int], attacks: list[str]) -> None:
    """The tables from finished run folders: rows of the same (defence, attack, seed, budget) are one cell's."""
    parts = [(*_read_pool(f), f) for f in folders]
    wide = pd.concat([w for w, _, _ in parts]).drop_duplicates(["defence", "attack", "seed", "budget"])
    attacks = [a for a in attacks if a in set(wide["attack"])]
    undefended = wide[wide["defence"] == "none"]
    seeds = sorted(int(s) for s in undefended["seed"].unique())
    budgets = [b for b in budgets if b in set(undefended["budget"])]
    summary = parts[0][1]
    shown = Path(", ".join(map(str, folders)))
    report_undefended(undefended, summary, float("nan"), seeds, budgets, attacks, shown)
    defended = wide[wide["defence"] != "none"]
    if len(defended):
        dseeds = sorted(int(s) for s in defended["seed"].unique())
        report_defended(defended, float("nan"), undefended, dseeds, budgets,
                        [a for a in attacks if a in set(defended["attack"])], Path("(the folders above)"))


def report_undefended(wide: pd.DataFrame, summary: dict, wall: float, seeds: list[int], budgets: list[int],
                      attacks: list[str], base: Path) -> None:
    """The undefended table: mean ± sd over seeds, [min, max], accuracy, seconds per checkpoint, delta vs knockoff."""
    victim = summary["victim"]
    print(f"victim: {victim['description']}, test accuracy {victim['test_accuracy']:.4f} on {victim['test_samples']} "
          f"test images ({'MNIST test set, shared/data' if MNIST_TEST.exists() else 'mnist5k'}); pool: "
          f"{victim['pool']} ({victim['pool_samples']} images)")
    thief = summary["thief"]
    print(f"thief: {thief['architecture']} {thief['arch_params']}, epochs {thief['epochs']}, steps "
          f"[{thief['min_steps']}, {thief['max_steps']}], lr {thief['lr']}, augment {thief['augment']}, unlabelled "
          f"{thief['unlabelled']}, warm_start {thief['warm_start']}")
    print(f"undefended: seeds {seeds}, wall time {_secs(wall)} (run folder {base})")
    agg = wide.groupby(["attack", "budget"]).agg(fid=("fidelity", "mean"), sd=("fidelity", "std"),
                                                  lo=("fidelity", "min"), hi=("fidelity", "max"),
                                                  acc=("accuracy", "mean"), secs=("ckpt_seconds", "mean"),
                                                  queries=("queries_used", "max"),
                                                  n=("seed", "nunique")).reset_index()
    # each attack against random KnockoffNets on the same seeds (a split run may hold more seeds of some attacks)
    knockoff = wide[wide["attack"] == "knockoff"].set_index(["seed", "budget"])["fidelity"]

    def versus_knockoff(attack: str, budget: int) -> float:
        rows = wide[(wide["attack"] == attack) & (wide["budget"] == budget)]
        pairs = [(f, knockoff.get((s, budget))) for s, f in zip(rows["seed"], rows["fidelity"])]
        pairs = [(f, k) for f, k in pairs if k is not None]
        return float(np.mean([f - k for f, k in pairs])) if pairs else float("nan")

    print()
    print(f"{'attack':24s} {'budget':>6s} {'queries':>7s} {'seeds':>5s} {'fidelity':>9s} {'± sd':>6s} "
          f"{'[min, max]':>15s} {'accuracy':>8s} {'s/ckpt':>7s} {'vs knockoff, same seeds':>23s}")
    for a in attacks:
        for _, r in agg[agg["attack"] == a].iterrows():
            delta = versus_knockoff(a, int(r["budget"]))
            print(f"{a:24s} {int(r['budget']):6d} {int(r['queries']):7d} {int(r['n']):5d} {r['fid']:9.3f} "
                  f"{r['sd']:6.3f} [{r['lo']:.3f}, {r['hi']:.3f}] {r['acc']:8.3f} {r['secs']:7.1f} "
                  f"{'' if a == 'knockoff' else f'{delta:+23.3f}'}")
    best = agg.loc[agg.groupby("budget")["fid"].idxmax()].set_index("budget")
    print()
    for b in budgets:
        print(f"best at {b:5d}: {best.loc[b, 'attack']} {best.loc[b, 'fid']:.3f}")
    strat = agg[agg["attack"] != "knockoff"]
    overall = strat.groupby("attack")["fid"].mean().idxmax()
    ahead = [(b, versus_knockoff(overall, b)) for b in budgets]
    print(f"best strategy overall (mean over budgets): {overall}; ahead of random KnockoffNets at every budget: "
          f"{'yes' if all(d > 0 for _, d in ahead) else 'NO'} ({', '.join(f'{b}: {d:+.3f}' for b, d in ahead)})")
    for b, goal in ((1500, 0.90), (500, 0.85)):
        if b in best.index:
            f = best.loc[b, "fid"]
            print(f"target best pool attack >= {goal:.2f} fidelity at {b} queries: {f:.3f} ({best.loc[b, 'attack']}, "
                  f"{'met' if f >= goal else 'NOT met'})")


def _defended(wide: pd.DataFrame | None, base: Path, defended_seeds: list[int], budgets: list[int],
              strategies: list[str], attacks: list[str], workers: int | None) -> None:
    dwide, _, dwall = _run_pool(_pool_scenario([REVERSE_SIGMOID, "label_only"], defended_seeds, budgets, strategies),
                                base / "defended", workers)
    report_defended(dwide, dwall, wide, defended_seeds, budgets, attacks, base / "defended")


def report_defended(dwide: pd.DataFrame, dwall: float, wide: pd.DataFrame | None, defended_seeds: list[int],
                    budgets: list[int], attacks: list[str], base: Path) -> None:
    """Fidelity against reverse sigmoid and label-only beside the undefended one (same seeds), s/ckpt of each."""
    print()
    print(f"defended: seeds {defended_seeds}, wall time {_secs(dwall)} (run folder {base}); fidelity "
          f"(mean over seeds) undefended | reverse_sigmoid(beta 1, gamma 0.2) | label_only, s/ckpt of each")
    dagg = dwide.groupby(["defence", "attack", "budget"]).agg(fid=("fidelity", "mean"),
                                                            secs=("ckpt_seconds", "mean")).reset_index()
    undefended = (wide[wide["seed"].isin(defended_seeds)].groupby(["attack", "budget"])["fidelity"].mean()
                  if wide is not None else pd.Series(dtype=float))
    rs_id = next(d for d in dagg["defence"].unique() if d.startswith("reverse_sigmoid"))
    print(f"{'attack':24s} {'budget':>6s} {'none':>7s} {'rev.sigm':>9s} {'s/ckpt':>7s} {'label':>7s} {'s/ckpt':>7s}")
    for a in attacks:
        for b in budgets:
            rs = dagg[(dagg["defence"] == rs_id) & (dagg["attack"] == a) & (dagg["budget"] == b)]
            lo = dagg[(dagg["defence"] == "label_only") & (dagg["attack"] == a) & (dagg["budget"] == b)]
            if rs.empty and lo.empty:
                continue

            def cell(frame: pd.DataFrame, column: str) -> float:
                return float(frame[column].iloc[0]) if len(frame) else float("nan")

            print(f"{a:24s} {b:6d} {undefended.get((a, b), float('nan')):7.3f} {cell(rs, 'fid'):9.3f} "
                  f"{cell(rs, 'secs'):7.1f} {cell(lo, 'fid'):7.3f} {cell(lo, 'secs'):7.1f}")


def _secs(seconds: float) -> str:
    """A wall time, or what --from-runs cannot know."""
    return f"{seconds:.0f} s" if np.isfinite(seconds) else "not measured here (--from-runs)"


def _id(item) -> str:
    if isinstance(item, str):
        return item
    if "id" in item:
        return item["id"]
    (name, params), = item.items()
    return name + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


if __name__ == "__main__":
    main()
