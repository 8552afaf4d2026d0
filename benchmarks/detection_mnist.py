"""Detection benchmark: the SAME paper's MNIST setting (Table 1), ours beside the paper's numbers.

Runs the shipped ``same_mnist`` scenario — or reads a finished run with ``--from-run`` — and prints:
the AUROC / AUPR / FPR@95%TPR table per detector and attack at each detection budget, the paper's
numbers beside ours, detector cost (training time, scoring cost vs the victim's inference, served
accuracy), the malicious-ratio sweep, PRADA's per-client flags, and what benign users and attackers
experienced under the active defences.

With ``../shared/data`` present (``--shared-data``), benign queries are MNIST test digits and the
OE/EDM outlier set is notMNIST letters instead of the built-in glyphs. The paper used KMNIST as
the outlier set and EMNIST as the Knockoff proxy; neither is available here: the proxy is
sklearn's 8x8 digits, upscaled — the hardest case for reconstruction-based detectors (see
CALIBRATION.md).

    python benchmarks/detection_mnist.py                 # run same_mnist (20-30 min cold on 2 cores)
    python benchmarks/detection_mnist.py --shared-data   # MNIST-test benign queries, notMNIST outliers
    python benchmarks/detection_mnist.py --from-run runs/same_mnist/<stamp>
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# SAME paper, MNIST, 1k queries: AUROC (FPR95 where given).
PAPER_AUROC = {"same": {"jbda": 93.30, "knockoff": 99.37, "dfme": 100.0},
               "oe": {"jbda": 58.70, "knockoff": 91.78, "dfme": 100.0},
               "edm": {"jbda": 66.06, "knockoff": 86.01, "dfme": 100.0}}
PAPER_FPR95 = {"same": {"jbda": 27.4, "knockoff": 1.3, "dfme": 0.0}}
PAPER_TRAIN_S = "CIFAR-10 training time in the paper: SAME 170 s, OE 1563 s, EDM 2015 s"


def run(shared: bool, out: Path | None) -> Path:
    import yaml

    from stealcheck.runner import run_scenario
    from stealcheck.scenario import build_scenario

    data = yaml.safe_load((ROOT / "scenarios" / "same_mnist.yaml").read_text())
    if shared:
        if not SHARED.exists():
            sys.exit(f"--shared-data: {SHARED} not found")
        data["name"] = "same_mnist_shared"
        data["data"]["benign"] = {"source": "npz", "path": str(SHARED / "mnist_test.npz"), "limit": 2000}
        data["data"]["outliers"] = {"source": "npz", "path": str(SHARED / "notmnist_test.npz"), "limit": 5000}
    scenario = build_scenario(data, source=str(ROOT / "scenarios" / "same_mnist.yaml"))
    outcome = run_scenario(scenario, out_dir=out, quiet=False)
    return outcome.run_dir


def pct(v: float) -> str:
    return "  -  " if pd.isna(v) else f"{100 * v:5.1f}"


def report(run_dir: Path) -> None:
    frame = pd.read_csv(run_dir / "results.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    plugins = {k: v["plugin"] for k, v in summary.get("detectors", {}).items()}
    det = frame[frame["kind"] == "detection"]
    print(f"run: {run_dir}\nvictim: {summary['victim']['description']}, test accuracy "
          f"{summary['victim']['test_accuracy']:.4f}; benign: {summary['detection']['benign']} "
          f"({summary['detection']['benign_samples']} scored, {summary['detection']['calibration_samples']} "
          f"calibration); outliers: {summary['detection']['outliers']}")
    print("Not available here: KMNIST (paper's OE/EDM outlier set) and EMNIST (paper's Knockoff proxy); "
          "the proxy is sklearn's upscaled 8x8 digits.\n")
    attacks = sorted(det["attack"].dropna().unique())
    for budget in sorted(pd.to_numeric(det["budget"]).unique()):
        sub = det[pd.to_numeric(det["budget"]) == budget]
        print(f"== detection at {int(budget)} queries: AUROC / AUPR / FPR@95%TPR (%), paper AUROC in [] ==")
        print(f"{'detector':<12}" + "".join(f"{a:>30}" for a in attacks))
        for d in sub["defence"].unique():
            if plugins.get(d) == "prada":
                continue
            line = f"{d:<12}"
            for a in attacks:
                cell = sub[(sub["defence"] == d) & (sub["attack"] == a)].set_index("metric")["value"]
                paper = PAPER_AUROC.get(plugins.get(d, d), {}).get(a) if int(budget) == 1000 and d in plugins \
                    and plugins[d] == d else None
                text = (f"{pct(cell.get('auroc'))}/{pct(cell.get('aupr'))}/{pct(cell.get('fpr_at_95_tpr'))}"
                        if len(cell) else "not scored")
                line += f"{text + (f' [{paper:.1f}]' if paper is not None else ''):>30}"
            print(line)
        print()
    cost = frame[frame["kind"] == "detector"].pivot_table(index="defence", columns="metric", values="value")
    if len(cost):
        print("== detector cost ==")
        print(cost.round(3).to_string())
        fit = cost.get("fit_seconds")
        if fit is not None and {"same", "oe", "edm"} <= set(fit.index):
            print(f"SAME training / OE: {fit['same'] / fit['oe']:.2f}, SAME / EDM: {fit['same'] / fit['edm']:.2f} "
                  f"(target <= 0.2; {PAPER_TRAIN_S}); note: a detector loaded from the cache reports its original "
                  "fit time")
        print()
    sweep = det[det["metric"].str.contains("@") & ~det["metric"].str.contains("clients")]
    if len(sweep):
        print("== malicious-ratio sweep (AUROC/AUPR %, largest budget per attack) ==")
        print((sweep.pivot_table(index=["defence", "attack"], columns="metric", values="value") * 100).round(1)
              .to_string())
        print()
    prada = det[det["defence"].map(lambda d: plugins.get(d) == "prada")]
    if len(prada):
        print("== PRADA (per client) ==")
        print(prada.pivot_table(index=["attack", "budget"], columns="metric", values="value").round(3).to_string())
        print()
    service = frame[frame["metric"].isin(["answered_share", "latency_mean_ms", "latency_p95_ms", "fidelity"])]
    if len(service):
        print("== active defences: honest users (utility) vs attackers (extraction, largest budget) ==")
        util = service[service["kind"] == "utility"].pivot_table(index="defence", columns="metric", values="value")
        print("honest users:\n" + util.round(3).to_string())
        ext = service[service["kind"] == "extraction"]
        ext = ext[pd.to_numeric(ext["budget"]) == ext.groupby("attack")["budget"].transform(
            lambda b: pd.to_numeric(b).max())]
        print("attackers:\n" + ext.pivot_table(index=["defence", "attack"], columns="metric", values="value")
              .round(3).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-run", type=Path, help="print the tables of a finished run instead of running")
    ap.add_argument("--shared-data", action="store_true", help="benign MNIST test digits, notMNIST outliers")
    ap.add_argument("--out", type=Path, help="run folder")
    args = ap.parse_args()
    run_dir = args.from_run or run(args.shared_data, args.out)
    report(run_dir)


if __name__ == "__main__":
    main()
