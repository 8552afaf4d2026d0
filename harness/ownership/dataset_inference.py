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
        from sklearn.linear_model import LogisticRegression

        v = ctx.victim
        victim = Suspect("victim", v.predict_proba, tuple(v.input_shape), v.nb_classes, tuple(v.clip_values))
        fit_priv, test_priv = self._split(len(ctx.private), ctx, "private")
        fit_pub, test_pub = self._split(len(ctx.public), ctx, "public")
        features = np.concatenate([self._walk(victim, ctx.private.x[fit_priv], ctx, "fit private"),
                                   self._walk(victim, ctx.public.x[fit_pub], ctx, "fit public")])
        labels = np.r_[np.ones(len(fit_priv)), np.zeros(len(fit_pub))]
        mean, std = features.mean(0), features.std(0) + 1e-12
        reg = LogisticRegression(max_iter=1000).fit((features - mean) / std, labels)
        return Evidence({"coef": reg.coef_[0], "intercept": reg.intercept_, "mean": mean, "std": std,
                         "private_x": ctx.private.x[test_priv], "public_x": ctx.public.x[test_pub]},
                        {"fit_samples": int(len(labels)), "victim_walk_queries": victim.queries})

    def confidence(self, features: np.ndarray, evidence: Evidence) -> np.ndarray:
        a = evidence.arrays
        return (features - a["mean"]) / a["std"] @ a["coef"] + a["intercept"][0]

    def verify(self, suspect: Suspect, evidence: Evidence, ctx: OwnershipContext) -> Verdict:
        before = suspect.queries
        private = self.confidence(self._walk(suspect, evidence.arrays["private_x"], ctx, "verify private"), evidence)
        public = self.confidence(self._walk(suspect, evidence.arrays["public_x"], ctx, "verify public"), evidence)
        t, p = welch_p_value(private, public)
        return Verdict(t, p, suspect.queries - before, {"mean_private": float(private.mean()),
                                                         "mean_public": float(public.mean())})
