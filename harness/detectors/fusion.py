"""Signal fusion: several cheap, complementary per-query signals, each standardised on benign data,
combined by a rule fitted on benign data only, thresholded for a target benign false-positive rate.

Why: no single signal holds across extraction attacks (the prototype numbers quoted in
``benchmarks/detection_mnist.py``, and stealcheck's ``same_mnist`` run). Reconstruction error misses proxy-set queries that reconstruct *better* than benign ones,
confidence scores (max-softmax, energy) miss JBDA's near-in-distribution steps. The defender does
not know which attack will come, so the combination must not be tuned on attack queries: every
statistic here comes from the victim's training data or from held-out benign queries.

Signals (``signals:``; each oriented so that higher = less like benign data):

- ``pixel_density``: negative log-likelihood of the query under per-input-feature intensity
  histograms (``pixel_bins`` bins over the input range, plus, with ``pixel_atoms``, one cell for
  each end of the range; Laplace-smoothed) fitted on the victim's training data — a naive
  per-pixel density model. Dense small perturbations (JBDA's steps) move pixels that are nearly
  constant in benign data (a digit's background) into rare cells; the end cells make that hold
  for steps of any size (with bins alone a step smaller than a bin stays in the background's
  bin: 16 bins missed JBDA with steps of 0.02). Costs a table lookup per input feature.
- ``intensity_knn``: distance from the query's intensity histogram — log(1 + count) of its input
  features in each cell of ``pixel_density``'s cells, position ignored — to the ``knn_k``-th
  nearest training sample's (Euclidean). Perturbations that keep every pixel plausible where it is
  still change the image's overall mix of intensities: JBDA steps restricted to stroke pixels
  (``keep_saturated``, which evades ``pixel_density``) push edge values by +-0.1 and clip some to
  the range ends. Costs a histogram per query and a distance to each bank histogram.
- ``energy``: -logsumexp(logits) of the victim (needs its logits).
- ``msp``: 1 - max softmax probability of the victim.
- ``feature_knn``: cosine distance from the query's penultimate-layer features to its
  ``knn_k``-th nearest training sample (Sun et al., ICML 2022; needs the victim network: the
  features are the input of its last linear layer).
- ``feature_mahalanobis``: class-conditional Mahalanobis distance on the same features, shared
  Ledoit-Wolf covariance (Lee et al., NeurIPS 2018), minimum over classes.
  With ``feature_dims`` both feature signals work on the features projected onto the bank's top
  singular directions (kNN reads bank size x dimensions numbers per query, which dominates the cost
  of scoring one query at a time).
- ``reconstruction`` / ``masked_reconstruction`` / ``deviation``: SAME's terms (unmasked MAE
  reconstruction error; the error on masked patches averaged over ``masked_draws`` random masks;
  the victim-vs-auxiliary KL), from the MAE configured under ``mae:`` (shared with the ``same``
  detectors through the cache when the configuration matches). The most expensive signals.

Fitting (benign only): the histograms, the intensity and feature banks and the class means come from
``ctx.train``.
``ctx.calibration`` (benign queries the victim never trained on) is split, seeded, into a
*standardisation* part — each signal's mean and standard deviation, and for the ``mahalanobis``
rule the signals' covariance — and a *threshold* part, on which the combined score's
(1 - ``target_fpr``) quantile becomes ``threshold_``; the threshold's benign FPR is therefore
measured on data the standardisation never saw.

Rules: ``max`` (default) — the largest standardised signal, monotone in every signal; ``sum`` —
their sum, monotone too; ``mahalanobis`` — the Mahalanobis distance of the standardised signal
vector from the benign mean (two-sided: it also flags queries that are *too* typical on one signal,
such as proxy images that reconstruct better than benign ones; not monotone).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.covariance import LedoitWolf


from .detectors import Detector, DetectorContext
from .specs import FEATURE_SIGNALS, FusionParams, MAE_SIGNALS

#: the default signals, in order, each used when the victim allows it (see ``resolve_signals``)


def last_linear(net: nn.Module) -> nn.Linear | None:
    """The network's last ``nn.Linear`` (its classification head), or None."""
    found = None
    for module in net.modules():
        if isinstance(module, nn.Linear):
            found = module
    return found


def features_and_logits(net: nn.Module, x: torch.Tensor, head: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: the head's input (penultimate features, flattened) and the logits."""
    grabbed: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: grabbed.append(args[0]))
    try:
        logits = net(x)
    finally:
        handle.remove()
    return grabbed[-1].flatten(1), logits


def _victim_offers(ctx: DetectorContext) -> tuple[bool, bool]:
    """(the victim network with a final linear layer, the victim's logits) are available."""
    has_net = ctx.victim_network is not None and last_linear(ctx.victim_network) is not None
    return has_net, ctx.logits is not None or has_net


def default_signals(ctx: DetectorContext) -> tuple[list[str], dict[str, str]]:
    """The default signals this victim allows, in order, and the ones it does not, with the reason."""
    has_net, has_logits = _victim_offers(ctx)
    used, left_out = ["pixel_density"], {}
    if len(ctx.input_shape) == 3:
        used.append("intensity_knn")
    else:
        left_out["intensity_knn"] = "not an image input"
    if has_logits:
        used.append("energy")
    else:
        used.append("msp")
        left_out["energy"] = "no logits (black-box probabilities): msp used instead"
    if has_net:
        used.append("feature_knn")
    else:
        left_out["feature_knn"] = ("no victim network" if ctx.victim_network is None
                                   else "the victim network has no final nn.Linear layer")
    return used, left_out


def resolve_signals(params: FusionParams, ctx: DetectorContext) -> list[str]:
    """The signals this detector will use with this victim; a clear error for impossible requests."""
    if params.signals is None:
        return default_signals(ctx)[0]
    has_net, has_logits = _victim_offers(ctx)
    missing = []
    for s in params.signals:
        if s == "energy" and not has_logits:
            missing.append(f"'{s}' needs the victim's logits (a PyTorch victim)")
        if s in FEATURE_SIGNALS and not has_net:
            missing.append(f"'{s}' needs the victim network with a final linear layer (a PyTorch victim)")
        if s in MAE_SIGNALS and (ctx.make_network is None or len(ctx.input_shape) != 3):
            missing.append(f"'{s}' needs an image victim with a PyTorch architecture (SAME's MAE and "
                           "auxiliary model)")
    if missing:
        raise ValueError("fusion cannot compute these signals for this victim: " + "; ".join(missing) +
                         ". Remove them from 'signals' (or use null for the defaults).")
    return list(params.signals)


def left_out_signals(params: FusionParams, ctx: DetectorContext) -> dict[str, str]:
    """Default signals this victim does not allow, with the reason (empty when signals are given)."""
    return {} if params.signals is not None else default_signals(ctx)[1]


def combine(z: np.ndarray, rule: str, precision: np.ndarray | None = None) -> np.ndarray:
    """Combine standardised signals ``z`` (n, k) into one score per row."""
    if rule == "max":
        return z.max(axis=1)
    if rule == "sum":
        return z.sum(axis=1)
    if precision is None:
        raise ValueError("the mahalanobis rule needs the signals' precision matrix (fit first)")
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, precision, z), 0.0))


class FusionDetector(Detector):
    """Signal fusion: pixel density, intensity mix, victim energy / max-softmax, penultimate-feature kNN
    or Mahalanobis distance and SAME's reconstruction terms, each z-scored on benign data and combined by
    a benign-only rule (max of z-scores by default), with a threshold for a target benign false-positive rate.

    What the defender needs: the victim's training data and benign held-out queries (the scenario's
    benign set); for the default signals, the victim's logits and its network (penultimate features).
    No attack queries, no outlier data; the victim is not retrained. With only black-box
    probabilities it falls back to pixel density, max-softmax and, for image inputs, the intensity mix.

    Fitting on attack data is refused: :meth:`fit` takes the defender's context only (it carries no
    attack queries), and :meth:`calibrate` — re-standardising on new benign traffic — rejects any
    sample marked as an attack.
    """

    def setup(self, ctx: DetectorContext) -> None:
        super().setup(ctx)
        self.signals_ = resolve_signals(self.params, ctx)
        self.signals_left_out_ = left_out_signals(self.params, ctx)
        net = ctx.victim_network
        self.net_ = net.eval() if net is not None else None
        self.head_ = last_linear(net) if net is not None else None
        self.same_ = None
        if any(s in MAE_SIGNALS for s in self.signals_):
            from .same import SameXDetector

            self.same_ = SameXDetector(self.params.mae)
            self.same_.setup(ctx)
        self.log_hist_: np.ndarray | None = None
        self.bank_: np.ndarray | None = None
        self.class_means_: np.ndarray | None = None
        self.feature_precision_: np.ndarray | None = None
        self.projection_: np.ndarray | None = None
        self.hist_bank_: np.ndarray | None = None
        self.mean_ = np.zeros(len(self.signals_))
        self.std_ = np.ones(len(self.signals_))
        self.signal_precision_: np.ndarray | None = None
        self.threshold_ = float("inf")
        self.threshold_fpr_ = float("nan")
        self.knn_k_ = self.params.knn_k or 1

    # -- fitting (benign only) -----------------------------------------------------------------
    def fit(self, ctx: DetectorContext, *args: Any, **kwargs: Any) -> "FusionDetector":
        """Fit on the defender's context only; any extra data (attack samples, labels) is refused."""
        if args or kwargs:
            raise TypeError("FusionDetector.fit(ctx) takes the defender's DetectorContext only: it is fitted on "
                            "the victim's training data and benign held-out queries, never on attack queries or "
                            "attack labels. To re-calibrate on new benign traffic use calibrate(x_benign).")
        if not isinstance(ctx, DetectorContext):
            raise TypeError(f"FusionDetector.fit expects a DetectorContext. Got {type(ctx).__name__} instead.")
        if ctx.calibration is None or len(ctx.calibration) < 4:
            raise ValueError("fusion standardises its signals on benign held-out data: the context needs a "
                             "calibration set of at least 4 samples (the scenario's benign or test data).")
        return super().fit(ctx)  # type: ignore[return-value]

    def _fit(self, ctx: DetectorContext) -> None:
        rng = np.random.default_rng(ctx.seed + 3571)
        train_x = np.asarray(ctx.train.x, dtype=np.float32)
        if "pixel_density" in self.signals_:
            self.log_hist_ = self._fit_histograms(train_x, ctx.clip_values)
        idx = np.arange(len(train_x))  # the bank: the training samples the kNN signals compare with
        if len(idx) > self.params.bank_size:
            idx = np.sort(rng.choice(len(idx), self.params.bank_size, replace=False))
        self.knn_k_ = self.params.knn_k or max(1, int(round(len(idx) / 1000)))
        if "intensity_knn" in self.signals_:
            self.hist_bank_ = self._intensity_histograms(self._bins(train_x[idx], ctx.clip_values))
        if any(s in FEATURE_SIGNALS for s in self.signals_):
            feats = self._features(train_x[idx])
            d = self.params.feature_dims
            if d is not None and d < feats.shape[1]:
                # uncentred truncated SVD: the rank-d subspace that best keeps the bank's inner products
                self.projection_ = np.linalg.svd(feats, full_matrices=False)[2][:d].T.copy()
                feats = feats @ self.projection_
            if "feature_knn" in self.signals_:
                self.bank_ = (feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)).astype(np.float32)
            if "feature_mahalanobis" in self.signals_:
                if ctx.train.y is None:
                    raise ValueError("feature_mahalanobis needs the victim's labelled training data (ctx.train.y)")
                y = np.asarray(ctx.train.y)[idx]
                classes = np.unique(y)
                self.class_means_ = np.stack([feats[y == c].mean(axis=0) for c in classes])
                centred = feats - self.class_means_[np.searchsorted(classes, y)]
                self.feature_precision_ = LedoitWolf().fit(centred).precision_
        if self.same_ is not None:
            self.same_._fit(ctx)  # trains or loads SAME's MAE + auxiliary model (shared cache)
        self.calibrate(ctx.calibration.x)

    def calibrate(self, x_benign: np.ndarray, is_attack: np.ndarray | None = None) -> "FusionDetector":
        """(Re-)standardise every signal and set the threshold on benign queries ``x_benign``.

        ``is_attack`` exists to refuse mistakes: if any sample is marked as an attack query, nothing
        is fitted and a ValueError says why (the rule must never see attack data)."""
        x_benign = np.asarray(x_benign, dtype=np.float32)
        if is_attack is not None:
            marked = int(np.count_nonzero(np.asarray(is_attack)))
            if marked:
                raise ValueError(f"fusion is calibrated on benign data only: {marked} of {len(x_benign)} samples are "
                                 "marked as attack queries. Calibrate on benign traffic alone; attack queries are "
                                 "for evaluating the detector, never for fitting it.")
        if len(x_benign) < 4:
            raise ValueError(f"fusion needs at least 4 benign samples to calibrate. Got {len(x_benign)}.")
        std_idx, thr_idx = self.calibration_split(len(x_benign))
        raw = self.signal_values(x_benign)
        std_part, thr_part = raw[std_idx], raw[thr_idx]
        self.mean_ = std_part.mean(axis=0)
        self.std_ = np.maximum(std_part.std(axis=0), 1e-12)
        if self.params.rule == "mahalanobis":
            self.signal_precision_ = LedoitWolf().fit((std_part - self.mean_) / self.std_).precision_
        thr_scores = self._combine(thr_part)
        # the smallest threshold that flags at most floor(target_fpr * n) of the threshold part
        ordered = np.sort(thr_scores)
        allowed = int(np.floor(self.params.target_fpr * len(ordered) + 1e-9))
        self.threshold_ = float(ordered[len(ordered) - allowed - 1])
        self.threshold_fpr_ = float(np.mean(thr_scores > self.threshold_))
        return self

    def calibration_split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (seeded) of the standardisation part and the threshold part of n benign samples."""
        perm = np.random.default_rng((self._ctx.seed if self._ctx else 0) + 7907).permutation(n)
        n_std = min(n - 2, max(2, int(round(self.params.standardize_fraction * n))))
        return perm[:n_std], perm[n_std:]

    def _fit_histograms(self, x: np.ndarray, clip_values: tuple[float, float]) -> np.ndarray:
        bins = self._bins(x, clip_values)  # (n, d)
        nb = self.params.pixel_bins
        cells = nb + 2 if self.params.pixel_atoms else nb
        counts = np.stack([np.bincount(bins[:, j], minlength=cells) for j in range(bins.shape[1])]).astype(np.float64)
        counts += 1.0  # Laplace smoothing: an unseen bin is rare, not impossible
        return np.log(counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)

    def _intensity_histograms(self, bins: np.ndarray) -> np.ndarray:
        """Per sample, from its features' cells (``_bins``): log(1 + number of input features in each cell),
        position ignored (float32, (n, cells))."""
        cells = self.params.pixel_bins + 2 if self.params.pixel_atoms else self.params.pixel_bins
        flat = (bins + cells * np.arange(len(bins))[:, None]).ravel()
        counts = np.bincount(flat, minlength=cells * len(bins)).reshape(len(bins), cells)
        return np.log1p(counts).astype(np.float32)

    def _bins(self, x: np.ndarray, clip_values: tuple[float, float]) -> np.ndarray:
        lo, hi = float(clip_values[0]), float(clip_values[1])
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        scaled = (flat - lo) / max(hi - lo, 1e-12)
        nb = self.params.pixel_bins
        cells = np.clip((scaled * nb).astype(np.int64), 0, nb - 1)
        if self.params.pixel_atoms:
            # cells nb and nb + 1: exactly the low / high end (to float32 rounding)
            cells = np.where(scaled <= 1e-6, nb, np.where(scaled >= 1 - 1e-6, nb + 1, cells))
        return cells

    # -- signals -------------------------------------------------------------------------------
    def _features(self, x: np.ndarray) -> np.ndarray:
        """Penultimate features of the victim (float64, not projected)."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.params.score_batch_size):
                f, _ = features_and_logits(self.net_, torch.from_numpy(np.ascontiguousarray(x[i:i + self.params.score_batch_size])), self.head_)
                out.append(f.double().numpy())
        return np.concatenate(out) if out else np.empty((0, 0))

    def _signal_batch(self, x: np.ndarray) -> np.ndarray:
        ctx = self._ctx
        cols: dict[str, np.ndarray] = {}
        wanted = set(self.signals_)
        logits = None
        if self.net_ is not None and (wanted & {"energy", "msp", *FEATURE_SIGNALS}):
            # The feature signals' matrix products stay in torch: a numpy (OpenBLAS) product between two
            # forward passes leaves OpenBLAS threads spinning against torch's, which made the victim's
            # own forward pass here 3-4x slower on 2 cores (benchmarks/same_cost.py).
            with torch.inference_mode():
                f, lg = features_and_logits(self.net_, torch.from_numpy(np.ascontiguousarray(x)), self.head_)
                logits = lg.double().numpy()
                cols.update(self._feature_signals(f.double(), wanted))
        elif "energy" in wanted:
            logits = np.asarray(ctx.logits(x), dtype=np.float64)
        bins = self._bins(x, ctx.clip_values) if wanted & {"pixel_density", "intensity_knn"} else None
        if "intensity_knn" in wanted:
            with torch.inference_mode():  # in torch, not numpy: see above
                h = torch.from_numpy(self._intensity_histograms(bins))
                bank = torch.from_numpy(self.hist_bank_)
                # squared Euclidean distances as |h|^2 - 2 h.b + |b|^2: one matrix product (cdist is 3x slower
                # for a single query)
                sq = (h * h).sum(1, keepdim=True) - 2.0 * h @ bank.T + (bank * bank).sum(1)[None]
                k = min(self.knn_k_, sq.shape[1])
                kth = sq.topk(k, dim=1, largest=False).values[:, k - 1]
                cols["intensity_knn"] = kth.clamp_min(0.0).sqrt().double().numpy()
        if "pixel_density" in wanted:
            cols["pixel_density"] = -np.take_along_axis(self.log_hist_[None], bins[:, :, None], axis=2)[..., 0].sum(axis=1)
        if "energy" in wanted:
            top = logits.max(axis=1, keepdims=True)
            cols["energy"] = -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
        if "msp" in wanted:
            if logits is not None:
                z = logits - logits.max(axis=1, keepdims=True)
                probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            else:
                probs = np.asarray(ctx.predict_proba(x), dtype=np.float64)
            cols["msp"] = 1.0 - probs.max(axis=1)
        if wanted & {"reconstruction", "deviation"}:
            t = self.same_._terms_batch(x)
            cols["reconstruction"], cols["deviation"] = t[:, 0], t[:, 1]
        if "masked_reconstruction" in wanted:
            cols["masked_reconstruction"] = self.same_.masked_reconstruction_error(
                x, self.params.masked_draws, self.params.masked_ratio, seed=0)
        return np.stack([cols[s] for s in self.signals_], axis=1)

    def _feature_signals(self, feats: torch.Tensor, wanted: set[str]) -> dict[str, np.ndarray]:
        """feature_knn / feature_mahalanobis from penultimate features (float64 tensor), computed in torch."""
        out: dict[str, np.ndarray] = {}
        if self.projection_ is not None:
            feats = feats @ torch.from_numpy(self.projection_)
        if "feature_knn" in wanted:
            fn = (feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()
            sims = fn @ torch.from_numpy(self.bank_).T
            k = min(self.knn_k_, sims.shape[1])
            kth = sims.topk(k, dim=1).values[:, k - 1]
            out["feature_knn"] = 1.0 - kth.double().numpy()
        if "feature_mahalanobis" in wanted:
            # (f - m)' P (f - m) = f'Pf - 2 f'P m + m'P m, for every class mean m at once
            prec, means = torch.from_numpy(self.feature_precision_), torch.from_numpy(self.class_means_)
            fp = feats @ prec
            d = (fp * feats).sum(dim=1, keepdim=True) - 2.0 * fp @ means.T + ((means @ prec) * means).sum(dim=1)[None]
            out["feature_mahalanobis"] = d.clamp_min(0.0).min(dim=1).values.numpy()
        return out

    def signal_values(self, x: np.ndarray) -> np.ndarray:
        """Raw signals, (n, len(signals_)), columns in ``signals_`` order (higher = more suspicious)."""
        if self._ctx is None:
            raise RuntimeError("FusionDetector is not fitted: call fit(ctx) or load(folder, ctx) first")
        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.empty((0, len(self.signals_)))
        expected = tuple(self._ctx.input_shape)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"fusion was fitted on inputs shaped {expected}. Got {tuple(x.shape[1:])} instead.")
        bs = self.params.score_batch_size
        return np.concatenate([self._signal_batch(x[i:i + bs]) for i in range(0, len(x), bs)])

    def standardized(self, x: np.ndarray) -> np.ndarray:
        """Signals z-scored with the benign standardisation statistics."""
        return (self.signal_values(x) - self.mean_) / self.std_

    def _combine(self, raw: np.ndarray) -> np.ndarray:
        return combine((raw - self.mean_) / self.std_, self.params.rule, self.signal_precision_)

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty((0,))
        return self._combine(self.signal_values(x))

    def flag(self, x: np.ndarray) -> np.ndarray:
        """True where the score exceeds the threshold set for ``target_fpr`` on benign data."""
        return self.score(x) > self.threshold_

    # -- persistence ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The signals actually fused, and the default ones this victim did not allow (with why)."""
        return {"signals": list(self.signals_), "signals_dropped": dict(self.signals_left_out_)}

    def state(self) -> dict[str, Any]:
        def t(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

        out: dict[str, Any] = {"signals": list(self.signals_), "log_hist": t(self.log_hist_), "bank": t(self.bank_),
                               "class_means": t(self.class_means_), "feature_precision": t(self.feature_precision_),
                               "projection": t(self.projection_), "hist_bank": t(self.hist_bank_),
                               "mean": t(self.mean_), "std": t(self.std_),
                               "signal_precision": t(self.signal_precision_),
                               "threshold": self.threshold_, "threshold_fpr": self.threshold_fpr_,
                               "knn_k": self.knn_k_}
        if self.same_ is not None:
            out["same"] = self.same_.state()
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        if list(state["signals"]) != list(self.signals_):
            raise ValueError(f"saved fusion detector uses signals {state['signals']}, this one {self.signals_}")

        def n(v: Any) -> np.ndarray | None:
            return None if v is None else v.numpy()

        self.log_hist_, self.bank_ = n(state["log_hist"]), n(state["bank"])
        self.class_means_, self.feature_precision_ = n(state["class_means"]), n(state["feature_precision"])
        self.projection_ = n(state.get("projection"))
        self.hist_bank_ = n(state.get("hist_bank"))
        self.mean_, self.std_ = n(state["mean"]), n(state["std"])
        self.signal_precision_ = n(state["signal_precision"])
        self.threshold_, self.threshold_fpr_ = float(state["threshold"]), float(state["threshold_fpr"])
        self.knn_k_ = int(state["knn_k"])
        if self.same_ is not None:
            self.same_.load_state(state["same"])
