"""KnockoffNets (random, 1,500 queries) in process against the same run through `kind: remote`.

The quickstart's conv3 MNIST victim is trained (and cached) once, then served by `stealcheck serve`'s
app on a free loopback port in this process (no defence, no keys). The same scenario runs
alternately in process and through the wire (binary tensor data, then JSON numbers), ``--repeats``
times each; it prints the median wall time of each, their ratio, and whether the fidelity is
identical (it must be: the answers are the same float64 values). Goal (issue 15): ratio <= 1.5.

    python benchmarks/remote_knockoff.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("STEALCHECK_CACHE_DIR", tempfile.mkdtemp(prefix="stealcheck-bench-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd
    import torch
    import yaml

    from stealcheck.cli import load_and_check, main as cli
    from stealcheck.serve import Limits, background, build_service

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="remote-knockoff-"))
    scenario = yaml.safe_load((Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml").read_text())
    scenario.update(defences=["none"], attacks=[{"knockoff": {"strategy": "random"}}], budgets=[1500], expect=[],
                    output={"cache_cells": False})
    local = work / "local.yaml"
    local.write_text(yaml.safe_dump(scenario))

    def run(path: Path, tag: str) -> tuple[float, float]:
        out = work / f"{tag}-{time.monotonic_ns()}"
        start = time.perf_counter()
        if cli(["run", str(path), "--out", str(out), "--quiet"]) != 0:
            raise SystemExit(f"the {tag} run failed; see {out}")
        seconds = time.perf_counter() - start
        rows = pd.read_csv(out / "results.csv")
        return seconds, float(rows[(rows.kind == "extraction") & (rows.metric == "fidelity")]["value"].iloc[0])

    print("training (or loading) the quickstart victim ...")
    run(local, "warm-up")
    service = build_service(load_and_check(str(local)), "none", keys=None, audit_log=work / "audit.jsonl",
                            limits=Limits())
    remote = dict(scenario, name="quickstart-remote")
    remote["data"] = {k: v for k, v in scenario["data"].items() if k != "victim_train"}
    times: dict[str, list[float]] = {"in process": [], "remote, binary": [], "remote, JSON": []}
    fidelity: dict[str, set[float]] = {k: set() for k in times}
    with background(service) as url:
        paths = {}
        for tag, binary in (("remote, binary", True), ("remote, JSON", False)):
            remote["victim"] = {"kind": "remote", "url": url, "model": "quickstart", "api_key_env": None,
                                "evaluation_api_key_env": None, "binary": binary}
            paths[tag] = work / f"remote-{binary}.yaml"
            paths[tag].write_text(yaml.safe_dump(remote))
        paths["in process"] = local
        for _ in range(args.repeats):
            for tag in times:
                seconds, fid = run(paths[tag], tag.replace(" ", "").replace(",", "-"))
                times[tag].append(seconds)
                fidelity[tag].add(fid)
    base = statistics.median(times["in process"])
    print(f"\nKnockoffNets (random), 1,500 queries, quickstart victim, {args.repeats} runs each, median wall time "
          "of the whole run (victim cached; 1,000 test + 1,000 uniform evaluation queries included):")
    print(f"{'':<16}{'seconds':>9}{'ratio':>8}  fidelity")
    for tag, values in times.items():
        med = statistics.median(values)
        print(f"{tag:<16}{med:>9.2f}{med / base:>7.2f}x  {', '.join(f'{f:.4f}' for f in sorted(fidelity[tag]))}")
    same = len(set().union(*fidelity.values())) == 1
    print(f"identical fidelity everywhere: {same}; goal remote/in-process <= 1.5x: "
          f"{'met' if statistics.median(times['remote, binary']) / base <= 1.5 else 'NOT met'} (binary)")


if __name__ == "__main__":
    main()
