"""Dataset inference (Maini, Yaghini, Papernot; ICLR 2021), black-box: the "blind walk".

A model trained on a set of samples sits farther from its decision boundary around them than around
samples it never saw, and so does a copy distilled from it. From each sample the verifier walks along
random directions (uniform, Gaussian or Laplace noise scaled to unit L-infinity norm) in steps of
``step_size`` until the suspect's label changes: the number of steps, times the step, is that
direction's distance (``max_steps`` when the label never changes). The sorted distances are the
sample's features. A logistic regression (the confidence regressor) is fitted on the victim's own
features of private samples (label 1) and public ones (label 0). Then ``samples`` further private and
public samples are walked on the suspect and scored by the regressor, and a one-sided Welch t-test
(private scores higher) gives the p-value. The white-box variant (MinGD) is not implemented.
"""

from __future__ import annotations

import numpy as np

from stealcheck.seeds import derive_seed

from .base import Evidence, OwnershipContext, OwnershipScheme, Suspect, Verdict, welch_p_value
from .specs import DatasetInferenceParams


def blind_walk(suspect: Suspect, x: np.ndarray, *, directions: int, max_steps: int, step_size: float, noise: str,
               clip_values: tuple[float, float], seed: int) -> np.ndarray:
    """(n, directions) distances to the suspect's decision boundary along seeded random directions."""
    rng = np.random.default_rng(seed)
    n = len(x)
    shape = (n, directions, *x.shape[1:])
    if noise == "uniform":
        d = rng.uniform(-1, 1, shape)
    elif noise == "gaussian":
        d = rng.normal(0, 1, shape)
    else:
        d = rng.laplace(0, 1, shape)
    d = d / np.abs(d).reshape(n, directions, -1).max(axis=2).reshape(n, directions, *([1] * (x.ndim - 1)))
    d = d.astype(np.float32)
    base = suspect.labels(x)
    dist = np.full((n, directions), float(max_steps))
    active = np.ones((n, directions), dtype=bool)
    lo, hi = clip_values
    for k in range(1, max_steps + 1):
        rows, cols = np.nonzero(active)
        if len(rows) == 0:
            break
        probe = np.clip(x[rows] + k * step_size * d[rows, cols], lo, hi)
        changed = suspect.labels(probe) != base[rows]
        dist[rows[changed], cols[changed]] = k
        active[rows[changed], cols[changed]] = False
    return np.sort(dist * step_size, axis=1)


def deepfool_distances(network, x: np.ndarray, nb_classes: int, clip_values: tuple[float, float]) -> np.ndarray:
    """(n, 3) L1, L2 and L-infinity sizes of DeepFool's minimal label-changing perturbation (ART)."""
    import torch.nn as nn
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=network, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=nb_classes, clip_values=tuple(clip_values), device_type="cpu")
    adv = DeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=nb_classes, batch_size=64, verbose=False).generate(x)
    delta = (adv - x).reshape(len(x), -1)
    flipped = clf.predict(adv).argmax(1) != clf.predict(x).argmax(1)
    dist = np.stack([np.abs(delta).sum(1), np.sqrt((delta ** 2).sum(1)), np.abs(delta).max(1)], axis=1)
    cap = np.abs(np.subtract(*clip_values)) * np.array([delta.shape[1], np.sqrt(delta.shape[1]), 1.0])
    return np.where(flipped[:, None], dist, cap)  # no label change found: as far as the input box allows


class DatasetInference(OwnershipScheme):
    """Dataset inference: is the suspect farther from its boundary on the victim's private samples?"""

    params: DatasetInferenceParams

    def _walk(self, suspect: Suspect, x: np.ndarray, ctx: OwnershipContext, part: str) -> np.ndarray:
        p = self.params
        return blind_walk(suspect, x, directions=p.directions, max_steps=p.max_steps, step_size=p.step_size,
                          noise=p.noise, clip_values=ctx.clip_values, seed=derive_seed(ctx.seed, "blind walk", part))

    def _split(self, n: int, ctx: OwnershipContext, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Disjoint indices: those the regressor is fitted on, and those suspects are queried on."""
        order = np.random.default_rng(derive_seed(ctx.seed, "dataset inference split", part)).permutation(n)
        m = min(self.params.samples, n // 2)
        return order[m:m + min(self.params.train_samples, n - m)], order[:m]

    def prepare(self, ctx: OwnershipContext) -> Evidence:
        v = ctx.victim
        victim = Suspect("victim", v.predict_proba, tuple(v.input_shape), v.nb_classes, tuple(v.clip_values))
        fit_priv, test_priv = self._split(len(ctx.private), ctx, "private")
        fit_pub, test_pub = self._split(len(ctx.public), ctx, "public")
        features = np.concatenate([self._walk(victim, ctx.private.x[fit_priv], ctx, "fit private"),
                                   self._walk(victim, ctx.public.x[fit_pub], ctx, "fit public")])
        labels = np.r_[np.ones(len(fit_priv)), np.zeros(len(fit_pub))]
        arrays = {**_regressor(features, labels, ""), "private_x": ctx.private.x[test_priv],
                  "public_x": ctx.public.x[test_pub]}
        if self.params.white_box and v.network is not None:
            white = np.concatenate([self._white(v.network, ctx.private.x[fit_priv], ctx),
                                    self._white(v.network, ctx.public.x[fit_pub], ctx)])
            arrays.update(_regressor(white, labels, "wb_"))
        return Evidence(arrays, {"fit_samples": int(len(labels)), "victim_walk_queries": victim.queries})

    @staticmethod
    def _white(network, x: np.ndarray, ctx: OwnershipContext) -> np.ndarray:
        return deepfool_distances(network, x, ctx.nb_classes, ctx.clip_values)

    @staticmethod
    def confidence(features: np.ndarray, evidence: Evidence, prefix: str = "") -> np.ndarray:
        a = evidence.arrays
        return (features - a[prefix + "mean"]) / a[prefix + "std"] @ a[prefix + "coef"] + a[prefix + "intercept"][0]

    def verify(self, suspect: Suspect, evidence: Evidence, ctx: OwnershipContext) -> Verdict:
        before = suspect.queries
        a = evidence.arrays
        if self.params.white_box and suspect.network is not None and "wb_coef" in a:
            private = self.confidence(self._white(suspect.network, a["private_x"], ctx), evidence, "wb_")
            public = self.confidence(self._white(suspect.network, a["public_x"], ctx), evidence, "wb_")
            variant = 1.0
        else:
            private = self.confidence(self._walk(suspect, a["private_x"], ctx, "verify private"), evidence)
            public = self.confidence(self._walk(suspect, a["public_x"], ctx, "verify public"), evidence)
            variant = 0.0
        t, p = welch_p_value(private, public)
        return Verdict(t, p, suspect.queries - before, {"mean_private": float(private.mean()),
                                                         "mean_public": float(public.mean()), "white_box": variant})


def _regressor(features: np.ndarray, labels: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """The confidence regressor (logistic regression on standardised features) as arrays."""
    from sklearn.linear_model import LogisticRegression

    mean, std = features.mean(0), features.std(0) + 1e-12
    reg = LogisticRegression(max_iter=1000).fit((features - mean) / std, labels)
    return {prefix + "coef": reg.coef_[0], prefix + "intercept": reg.intercept_, prefix + "mean": mean,
            prefix + "std": std}
