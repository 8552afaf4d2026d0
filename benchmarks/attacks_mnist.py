"""Every extraction attack against one conv3 MNIST victim: fidelity and thief accuracy vs queries.

One run of the shipped `attacks_mnist` scenario, with two benchmark-only changes:
- evaluation on the 10,000-image MNIST test set from ../shared/data/mnist_test.npz when it exists
  (else the scenario's 1,000 mnist5k test digits);
- DFME and MAZE budgets from --data-free-budgets (default 100k, 500k, 2M queries).
Prints a table (attack, budget, queries, fidelity, accuracy, cumulative wall time) and the targets:
JBDA with 150 seeds and 6 rounds >= 80% thief accuracy; DFME >= 90% fidelity within 2M queries.

    python benchmarks/attacks_mnist.py [--data-free-budgets 100000,500000,2000000] [--only dfme maze]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from stealcheck.results import read_results, read_summary
from stealcheck.runner import run_scenario
from stealcheck.scenario import build_scenario

MNIST_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist_test.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-free-budgets", default="100000,500000,2000000",
                    help="comma-separated checkpoints for dfme and maze")
    ap.add_argument("--only", nargs="+", default=None, help="attack ids to run (default: all)")
    ap.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = ap.parse_args()

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


def _id(item) -> str:
    if isinstance(item, str):
        return item
    if "id" in item:
        return item["id"]
    (name, params), = item.items()
    return name + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


if __name__ == "__main__":
    main()
