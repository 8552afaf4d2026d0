"""Scaling out: one grid of real cells run locally, on a 2-worker and on a 1-worker Dask LocalCluster.

The grid: an MLP victim on scikit-learn's digits, KnockoffNets (random) and CopycatCNN against four
output defences, over six seeds (``--seeds``), at two budgets: 48 extraction cells and 4 utility cells,
each a thief trained for real. The victim is trained once beforehand (a warm-up run) and loaded from the
cache by every run; cell results are not cached (``cache_cells: false``), so each run does all the
work. Torch uses one thread everywhere (OMP_NUM_THREADS=1), so a worker is one core and the
local run is the same work on one core. Wall times include starting the cluster.

Prints each run's wall time, the speedup of 2 workers over local (goal >= 1.7x on 2 cores), the
1-worker cluster against local (Dask's overhead, goal <= 1.10x), and whether every run gives the
same values (timing metrics aside).

    python benchmarks/scale.py [--seeds 6] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one core per worker or run

import shutil
import tempfile
import time
from pathlib import Path

import yaml


def scenario(root: Path, seeds: int, attacks=None, defences=None, budgets=None) -> dict:
    return {
        "name": "scale",
        "victim": {"kind": "torch", "architecture": "mlp", "input": {"shape": [1, 8, 8]}, "train": {"steps": 300}},
        "data": {"victim_train": {"source": "digits", "split": "train"},
                 "test": {"source": "digits", "split": "test"},
                 "attacker": {"source": "digits", "split": "all"}},
        "thief": {"architecture": "mlp", "min_steps": 4000, "max_steps": 4000},
        "defences": defences or ["none", {"rounded": {"decimals": 1}}, "label_only",
                                 {"reverse_sigmoid": {"beta": 1.0, "gamma": 0.2}}],
        "attacks": attacks or [{"knockoff": {"strategy": "random"}}, "copycat"],
        "budgets": budgets or [200, 400],
        "seeds": list(range(seeds)),
        "evaluation": {"uniform_samples": 200},
        "output": {"dir": str(root / "runs"), "cache_dir": str(root / "cache"), "cache_cells": False},
    }


def run(path: Path, out: Path, **execution) -> float:
    from stealcheck.cli import load_and_check
    from stealcheck.runner import Execution, run_scenario

    t0 = time.perf_counter()
    outcome = run_scenario(load_and_check(str(path)), out_dir=out, quiet=True, execution=Execution(**execution))
    assert outcome.status == "complete", outcome.status
    return time.perf_counter() - t0


def values(run_dir: Path):
    from stealcheck.results import read_results

    frame = read_results(run_dir)
    frame = frame[~frame["metric"].str.contains("seconds|_ms|latency|cost_ratio")]
    return frame.sort_values(["kind", "defence", "attack", "seed", "budget", "metric"]).reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=6, help="seeds of the grid: 8 extraction cells each (default 6: "
                    "52 cells, long enough that the cluster's fixed start-up cost is a small share)")
    ap.add_argument("--keep", metavar="DIR", help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="stealcheck-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    warm, grid = root / "warm.yaml", root / "grid.yaml"
    warm.write_text(yaml.safe_dump(scenario(root, 1, ["copycat"], ["none"], [200])))
    grid.write_text(yaml.safe_dump(scenario(root, args.seeds)))
    run(warm, root / "warm")  # trains the victim into the cache, once
    from stealcheck.plan import plan
    from stealcheck.cli import load_and_check

    cells = [c for c in plan(load_and_check(str(grid))) if c.journalled]
    print(f"grid: {len(cells)} cells ({sum(c.kind == 'extraction' for c in cells)} extraction), "
          f"{os.cpu_count()} CPU cores, one torch thread per process")
    times = {"local": run(grid, root / "local"),
             "dask, 2 workers": run(grid, root / "dask2", executor="dask", workers=2),
             "dask, 1 worker": run(grid, root / "dask1", executor="dask", workers=1)}
    for name, seconds in times.items():
        print(f"{name:<16} {seconds:7.1f} s")
    same = {name: values(root / folder).equals(values(root / "local"))
            for name, folder in (("dask, 2 workers", "dask2"), ("dask, 1 worker", "dask1"))}
    print(f"speedup, 2 workers vs local: {times['local'] / times['dask, 2 workers']:.2f}x (goal >= 1.7x)")
    print(f"overhead, 1 worker vs local: {times['dask, 1 worker'] / times['local']:.2f}x (goal <= 1.10x)")
    print("identical values (timings aside): " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in same.items()))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
