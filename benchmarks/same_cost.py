"""SAME's scoring cost and what each saving costs in detection (issue 6: target <= 3x the victim's inference).

Two parts:

1. Timing, no training needed (cost does not depend on the weights): per-query time of SAME's
   scoring path — MAE forward without masking + auxiliary model + the victim's own answer — against
   the victim's inference alone, for several MAE sizes (patch size = number of tokens, embedding
   width, depth), with and without ``torch.inference_mode``, at several batch sizes. ``fusion``
   is timed too, as shipped (one victim forward with a hook + pixel lookup + intensity histogram and its
   kNN + kNN over the feature bank) and with ``feature_dims: 64`` (the feature kNN on 64 projected
   dimensions instead of all 576).
2. Detection: the ``same_mnist`` setting (victim, benign split, the attacks' real queries) with SAME
   at each size, trained and scored by the runner: AUROC per attack beside the measured cost ratio.

    python benchmarks/same_cost.py                 # both parts (~6-8 min cold on 2 cores)
    python benchmarks/same_cost.py --timing-only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]

#: (label, MAE params): the default, fewer tokens, fewer tokens and a smaller network
SIZES = [
    ("p4-e64-d4 (default)", {}),
    ("p7-e64-d4", {"patch_size": 7}),
    ("p7-e32-d2", {"patch_size": 7, "embed_dim": 32, "depth": 2, "decoder_embed_dim": 32}),
    ("p14-e32-d2", {"patch_size": 14, "embed_dim": 32, "depth": 2, "decoder_embed_dim": 32}),
]

#: fusion's defaults, and with the penultimate features projected to 64 dimensions (the kNN reads the
#: whole bank per query, which dominates single-query cost)
FUSION_VARIANTS = [("fusion (defaults)", {}), ("fusion feature_dims=64", {"feature_dims": 64})]


def _per_query(fn, x: np.ndarray, batch: int, repeats: int = 5) -> float:
    """Median over repeats of the seconds per query to run ``fn`` over ``x`` in batches of ``batch``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            fn(x[i:i + batch])
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / len(x)


def timing(n: int = 1024) -> pd.DataFrame:
    from stealcheck.adapters.networks import conv3
    from stealcheck.detectors.same import MaskedAutoencoder, SameModelParams

    torch.manual_seed(0)
    x = np.random.default_rng(0).uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)
    victim, aux = conv3((1, 28, 28), 10, 16).eval(), conv3((1, 28, 28), 10, 16).eval()

    def victim_probs(xb: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(victim(torch.from_numpy(xb)), 1).numpy()

    fusion_scores = {label: _fusion_like(victim, params) for label, params in FUSION_VARIANTS}
    rows = []
    for batch in (512, 32, 1):
        xs = x if batch > 1 else x[:128]
        v = _per_query(victim_probs, xs, batch)
        for label, params in SIZES:
            mae = MaskedAutoencoder((1, 28, 28), SameModelParams(**params)).eval()
            for mode in ("inference_mode", "grad enabled"):
                ctx = torch.inference_mode if mode == "inference_mode" else torch.enable_grad

                def same_score(xb: np.ndarray) -> np.ndarray:
                    with ctx():
                        t = torch.from_numpy(xb)
                        recon, _ = mae(t, 0.0)
                        s1 = ((recon - t) ** 2).flatten(1).mean(1)
                        log_q = torch.log_softmax(aux(recon), 1)
                    p = victim_probs(xb)
                    return s1.detach().numpy() + (p * log_q.detach().numpy()).sum(1)

                s = _per_query(same_score, xs, batch)
                rows.append({"batch": batch, "detector": f"SAME {label}", "mode": mode, "victim_ms": 1e3 * v,
                             "score_ms": 1e3 * s, "ratio": s / v})
        for label, fusion_score in fusion_scores.items():
            f = _per_query(fusion_score, xs, batch)
            rows.append({"batch": batch, "detector": label, "mode": "inference_mode", "victim_ms": 1e3 * v,
                         "score_ms": 1e3 * f, "ratio": f / v})
    return pd.DataFrame(rows)


def _fusion_like(victim, params: dict):
    """The real fusion detector fitted on 3,500 random images (timing only: cost does not depend on the
    data); its ``score``."""
    from stealcheck import registry
    from stealcheck.datasets import Dataset
    from stealcheck.detectors.detectors import DetectorContext

    rng = np.random.default_rng(1)
    train = Dataset(rng.uniform(0, 1, (3500, 1, 28, 28)), rng.integers(0, 10, 3500), "random")
    calibration = Dataset(rng.uniform(0, 1, (500, 1, 28, 28)), None, "random-cal")

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return victim(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).double().numpy()

    def predict_proba(x: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(logits(x)), 1).numpy()

    ctx = DetectorContext(predict_proba=predict_proba, nb_classes=10, input_shape=(1, 28, 28), clip_values=(0.0, 1.0),
                          train=train, calibration=calibration, logits=logits, victim_network=victim)
    info = registry.detectors.get("fusion")
    return info.obj(info.parse_params(params)).fit(ctx).score


def detection(out: Path | None) -> Path:
    import yaml

    from stealcheck.runner import run_scenario
    from stealcheck.scenario import build_scenario

    data = yaml.safe_load((ROOT / "scenarios" / "same_mnist.yaml").read_text())
    data["name"] = "same_cost"
    data["detectors"] = [{"plugin": "same", "id": "same_" + label.split()[0].replace("-", "_"), "params": params}
                         for label, params in SIZES] + ["fusion", {"plugin": "fusion", "id": "fusion_d64",
                                                                   "params": {"feature_dims": 64}}]
    data["defences"] = ["none"]
    data["attacks"] = [a for a in data["attacks"] if a["id"] in ("knockoff", "knockoff_letters", "jbda", "dfme")]
    data["detection"] = {"budgets": [1000, 4000]}
    data["expect"] = []
    scenario = build_scenario(data, source=str(ROOT / "scenarios" / "same_mnist.yaml"))
    return run_scenario(scenario, out_dir=out, quiet=False).run_dir


def detection_table(run_dir: Path) -> None:
    frame = pd.read_csv(run_dir / "results.csv")
    det = frame[(frame["kind"] == "detection") & (frame["metric"] == "auroc")]
    table = (det.pivot_table(index="defence", columns=["attack", "budget"], values="value") * 100).round(1)
    cost = frame[frame["kind"] == "detector"].pivot_table(index="defence", columns="metric", values="value")
    table["score_cost_ratio"] = cost["score_cost_ratio"].round(2)
    table["fit_seconds"] = cost["fit_seconds"].round(1)
    print(f"== detection (AUROC %) and cost per SAME size; run {run_dir} ==")
    print(table.to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timing-only", action="store_true")
    ap.add_argument("--from-run", type=Path, help="print the detection table of a finished same_cost run")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    frame = timing()
    print("== scoring cost per query vs the victim's own inference (conv3 width 16, 28x28, 2 threads) ==")
    print(frame.round(3).to_string(index=False))
    if args.timing_only:
        return
    run_dir = args.from_run or detection(args.out)
    detection_table(run_dir)


if __name__ == "__main__":
    sys.exit(main())
