"""Tramèr et al.'s attacks against scikit-learn victims: a table shaped like the paper's.

Victims are built by stealcheck's scikit-learn adapter from its bundled data (min-max scaled to
[0, 1]): binary logistic regression on breast cancer (30 features), softmax / one-vs-rest logistic
regression and a 20-unit relu MLP on the 8x8 digits (64 features, 10 classes), decision trees on
wine and breast cancer. Every attack queries through stealcheck's Oracle (queries counted there).
Columns: model, unknowns, queries, 1-R_test and 1-R_unif (total variation; for label-only copies
the label agreement), the parameter error where the victim is linear, wall time, and the paper's
numbers on Adult beside ours. About three minutes on one core (MLP fits are most of it).
The binary LR rows also show the exact solve's residual and condition number, and are repeated with
answers rounded to float32 (what the oracle served before it kept float64, as a JSON API does) to show
what that precision costs.

Then Fredrikson et al.'s model inversion (ART's MIFace) on the softmax copy extracted from the
digits victim (made differentiable by tramer_models.as_pytorch_classifier) and on the victim itself
(white-box): per class, the mean absolute pixel difference and correlation of the two class
representatives (and a PNG grid under --out when given).

    python benchmarks/tramer.py [--skip-mlp] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from art.defences.postprocessor import Rounded

from stealcheck.adapters.data import SklearnTabularParams, sklearn_tabular
from stealcheck.adapters.sklearn_victim import SklearnVictim, SklearnVictimParams
from stealcheck.attacks.tramer import EquationSolving, LowdMeek, Retraining
from stealcheck.attacks.tramer_models import as_pytorch_classifier
from stealcheck.attacks.tramer_trees import PathFinding
from stealcheck.cache import Cache
from stealcheck.datasets import DataContext
from stealcheck.metrics import agreement, total_variation
from stealcheck.oracle import Oracle
from stealcheck.scenario import InputSpec
from stealcheck.victim import VictimContext

# The paper's Table 3 / 4 figures for Adult-trained models (1-R_test, 1-R_unif), from ALGORITHMS.md.
PAPER = {("softmax", 0.5): "99.96 / 99.75", ("softmax", 1.0): "100 / 100",
         ("mlp", 1.0): "98.68 / 97.23", ("mlp", 2.0): "99.89 / 99.82"}


def build(name: str, model: str, d: int, cache: Cache, **model_params):
    ctx = DataContext((d,), (0.0, 1.0), 0)
    parts = {s: sklearn_tabular(SklearnTabularParams(name=name, split=s), ctx) for s in ("train", "test")}
    params = SklearnVictimParams(model=model, model_params=model_params, input=InputSpec(shape=[d], range=(0, 1)))
    vctx = VictimContext(load_data=lambda role: parts["train"], data_fingerprint=lambda role: name, cache=cache,
                         seed=0, progress=False, base_dir=Path("."))
    return SklearnVictim.build(params, vctx), parts["test"]


def as_float32(probs: np.ndarray) -> np.ndarray:
    """Answers rounded to float32: an API that serves single precision (the oracle serves float64)."""
    return np.asarray(probs, dtype=np.float32)


def oracle(victim, output_mode: str = "probabilities", decimals: int | None = None, float32: bool = False) -> Oracle:
    post = ([Rounded(decimals=decimals)] if decimals else []) + ([as_float32] if float32 else [])
    return Oracle(victim.predict_proba, victim.input_shape, victim.nb_classes, victim.clip_values,
                  postprocessors=post, output_mode=output_mode, leaf_predict=victim.leaf_ids)


def row(label, victim, test, copy, queries, seconds, unif, note="", labels_only=False, paper="-"):
    v_test, v_unif = victim.predict_proba(test.x), victim.predict_proba(unif)
    c_test, c_unif = copy.predict_proba(test.x), copy.predict_proba(unif)
    if labels_only:  # a label-only copy has no confidences: 1 - R is label agreement
        r_test, r_unif = agreement(c_test, v_test), agreement(c_unif, v_unif)
    else:
        r_test, r_unif = 1 - total_variation(c_test, v_test), 1 - total_variation(c_unif, v_unif)
    m = {**copy.extra_metrics(), **copy.compare_with_victim(victim.parameters)}  # the copy vs the victim's parameters
    unknowns = int(m.get("unknowns", 0)) or "-"
    err = m.get("param_max_abs_error")
    if "leaves_found" in m:
        note = f"leaves {int(m['leaves_found'])}/{victim.info.get('tree_leaves')}, " \
               f"{m['queries_per_leaf']:.0f} q/leaf" + (f"; {note}" if note else "")
    if "direction_cosine" in m:
        note = f"cos(w, w^) = {m['direction_cosine']:.8f}" + (f"; {note}" if note else "")
    if "solve_residual" in m:  # binary LR: how far the exact solve can be trusted
        note = f"residual {m['solve_residual']:.1e}, cond {m['condition_number']:.3g}" + (f"; {note}" if note else "")
    print(f"| {label} | {unknowns} | {queries} | {100 * r_test:.2f} | {100 * r_unif:.2f} | "
          f"{'-' if err is None else f'{err:.1e}'} | {seconds:.1f} | {paper} | {note} |", flush=True)


def run_equation(label, victim, test, unif, family, multiples, decimals=None, float32=False, **kw):
    o = oracle(victim, decimals=decimals, float32=float32)
    attack = EquationSolving(o, family=family, **kw)
    unknowns = attack.model_.unknowns
    budgets = [int(round(m * unknowns)) for m in multiples]
    start = time.perf_counter()
    for (queries, copy), mult in zip(attack.iter_checkpoints(budgets), multiples):
        assert o.queries_used == queries
        row(f"{label} ({mult:g}x)", victim, test, copy, queries, time.perf_counter() - start, unif,
            paper=PAPER.get((family, mult), "-") if not decimals else "-")


def inversion(victim, out: Path | None, max_iter: int = 1000, learning_rate: float = 0.1) -> None:
    """MIFace on the softmax copy extracted at 1x unknowns and on the white-box victim, compared per class."""
    from art.attacks.inference.model_inversion import MIFace

    attack = EquationSolving(oracle(victim), family="softmax")
    ((queries, copy),) = list(attack.iter_checkpoints([attack.model_.unknowns]))
    differentiable = as_pytorch_classifier(copy.model_family, copy.theta, victim.input_shape, victim.clip_values)
    classes = np.arange(victim.nb_classes)
    x0 = np.full((len(classes), *victim.input_shape), 0.5)  # mid-grey start; threshold 1: run all max_iter steps
    reps = {}
    for name, clf in (("copy", differentiable), ("victim", victim.classifier)):
        start = time.perf_counter()
        reps[name] = MIFace(clf, max_iter=max_iter, threshold=1.0, learning_rate=learning_rate,
                            batch_size=len(classes), verbose=False).infer(x0.copy(), classes)
        print(f"MIFace on the {name}: {time.perf_counter() - start:.1f} s")
    a, b = (reps[k].reshape(len(classes), -1) for k in ("copy", "victim"))
    mad = np.abs(a - b).mean(axis=1)
    corr = np.array([np.corrcoef(a[k], b[k])[0, 1] for k in classes])
    conf = victim.predict_proba(a.astype(np.float32))[classes, classes]
    print(f"\nModel inversion (MIFace, {max_iter} steps, lr {learning_rate}) of the softmax copy ({queries} queries) "
          "vs of the victim (white-box), digits:\n")
    print("| class | mean abs pixel diff | correlation | victim's p(class) on the copy's inversion |")
    print("|---|---|---|---|")
    for k in classes:
        print(f"| {k} | {mad[k]:.4f} | {corr[k]:.4f} | {conf[k]:.4f} |")
    print(f"| mean | {mad.mean():.4f} | {corr.mean():.4f} | {conf.mean():.4f} |", flush=True)
    if out is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, len(classes), figsize=(len(classes), 2.3))
        for row_i, (name, imgs) in enumerate((("copy", a), ("victim", b))):
            for k in classes:
                ax = axes[row_i, k]
                ax.imshow(imgs[k].reshape(8, 8), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if k == 0:
                    ax.set_ylabel(name)
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "tramer_miface_digits.png", dpi=100, bbox_inches="tight")
        print(f"saved {out / 'tramer_miface_digits.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-mlp", action="store_true", help="leave out the MLP (most of the time)")
    ap.add_argument("--skip-inversion", action="store_true", help="leave out the MIFace comparison")
    ap.add_argument("--out", type=Path, default=None, help="folder for the model-inversion PNG grid")
    args = ap.parse_args()
    rng = np.random.default_rng(2016)
    cache = Cache(tempfile.mkdtemp(prefix="tramer-bench-"))
    print("| model | unknowns | queries | 1-R_test % | 1-R_unif % | max param err | time s | paper (Adult) | notes |")
    print("|---|---|---|---|---|---|---|---|---|")

    blr, test = build("breast_cancer", "logistic_regression", 30, cache)
    unif = rng.uniform(size=(1000, 30))
    for float32 in (False, True):  # the same queries, answers in float64 and rounded to float32
        answers = ", float32 answers" if float32 else ""
        run_equation(f"binary LR, breast cancer, basis design{answers}", blr, test, unif, "binary_lr", [1.0],
                     float32=float32, query_design="basis")
        run_equation(f"binary LR, uniform queries{answers}", blr, test, unif, "binary_lr", [1.0, 2.0], float32=float32)
    for dec in (4, 3, 2):
        run_equation(f"binary LR, basis, rounded to {dec}", blr, test, unif, "binary_lr", [1.0],
                     decimals=dec, query_design="basis")
    o = oracle(blr, output_mode="label")
    start = time.perf_counter()
    copy = LowdMeek(o).extract()
    row("Lowd-Meek, binary LR (labels)", blr, test, copy, o.queries_used, time.perf_counter() - start, unif,
        labels_only=True)
    for strategy in ("uniform", "line_search", "adaptive"):
        o = oracle(blr, output_mode="label")
        start = time.perf_counter()
        copy = Retraining(o, strategy=strategy, family="binary_lr", use_probability=False).extract(max_queries=651)
        row(f"retraining {strategy}, binary LR (labels)", blr, test, copy, o.queries_used,
            time.perf_counter() - start, unif, labels_only=True)

    unif = rng.uniform(size=(1000, 64))
    softmax, test = build("digits", "logistic_regression", 64, cache)
    run_equation("softmax LR, digits", softmax, test, unif, "softmax", [0.5, 1.0])
    for dec in (4, 3, 2):
        run_equation(f"softmax LR, rounded to {dec}", softmax, test, unif, "softmax", [1.0], decimals=dec)
    ovr, test = build("digits", "logistic_regression_ovr", 64, cache)
    run_equation("OvR LR, digits", ovr, test, unif, "ovr", [0.5, 1.0])
    if not args.skip_mlp:
        mlp, test = build("digits", "mlp", 64, cache)
        run_equation("MLP 20 relu, digits", mlp, test, unif, "mlp", [1.0, 2.0], hidden=20, activation="relu")

    for name, d in (("wine", 13), ("breast_cancer", 30)):
        tree, test = build(name, "decision_tree", d, cache)
        unif = rng.uniform(size=(1000, d))
        for variant in ("path", "top_down"):
            o = oracle(tree, output_mode="leaf")
            start = time.perf_counter()
            copy = PathFinding(o, variant=variant, eps=1e-4).extract()
            row(f"tree {name}, {variant}", tree, test, copy, o.queries_used, time.perf_counter() - start, unif)

    if not args.skip_inversion:
        inversion(softmax, args.out)


if __name__ == "__main__":
    main()
