"""Detection metrics: how well a detector's scores separate attack queries from benign ones.

Attack queries are the positives. Everything is computed with scikit-learn's ``roc_curve`` /
``average_precision_score``; the FPR at a given TPR is read off the ROC curve by linear
interpolation between its points, so it does not depend on where the thresholds happen to fall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

#: metric names written to results.csv for every detector x attack x budget (kind "detection")
DETECTION_METRICS = ("auroc", "aupr", "fpr_at_95_tpr", "fpr_at_90_tpr", "tpr_at_1_fpr")


def _labels(benign: np.ndarray, attack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    benign = np.asarray(benign, dtype=np.float64).ravel()
    attack = np.asarray(attack, dtype=np.float64).ravel()
    if len(benign) == 0 or len(attack) == 0:
        raise ValueError(f"need benign and attack scores, got {len(benign)} and {len(attack)}")
    scores = np.concatenate([benign, attack])
    if not np.isfinite(scores).all():
        raise ValueError("detector scores contain NaN or infinity")
    return np.concatenate([np.zeros(len(benign)), np.ones(len(attack))]), scores


def auroc(benign: np.ndarray, attack: np.ndarray) -> float:
    """Area under the ROC curve (attack = positive); 0.5 = chance, 1 = perfect separation."""
    y, s = _labels(benign, attack)
    return float(roc_auc_score(y, s))


def aupr(benign: np.ndarray, attack: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision, attack = positive).

    Unlike AUROC it depends on the share of attack queries: chance level equals that share.
    """
    y, s = _labels(benign, attack)
    return float(average_precision_score(y, s))


def fpr_at_tpr(benign: np.ndarray, attack: np.ndarray, tpr: float) -> float:
    """False-positive rate on benign queries when the threshold catches ``tpr`` of attack queries
    (linear interpolation on the ROC curve)."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    y, s = _labels(benign, attack)
    fpr, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    # tprs is non-decreasing: the first point reaching `tpr`, interpolated from the one before.
    i = int(np.searchsorted(tprs, tpr, side="left"))
    if i == 0 or tprs[i] == tpr:
        return float(fpr[i])
    t0, t1 = tprs[i - 1], tprs[i]
    return float(fpr[i - 1] + (fpr[i] - fpr[i - 1]) * (tpr - t0) / (t1 - t0))


def tpr_at_fpr(benign: np.ndarray, attack: np.ndarray, fpr_target: float) -> float:
    """Share of attack queries caught when at most ``fpr_target`` of benign queries are flagged
    (interpolated on the ROC curve)."""
    if not 0.0 <= fpr_target <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr_target}")
    y, s = _labels(benign, attack)
    fpr, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    # Several ROC points share an FPR (tied benign scores): keep the best TPR at each FPR.
    ufpr, start = np.unique(fpr, return_index=True)
    best = np.maximum.reduceat(tprs, start)
    return float(np.interp(fpr_target, ufpr, best))


def detection_metrics(benign: np.ndarray, attack: np.ndarray) -> dict[str, float]:
    """All of :data:`DETECTION_METRICS` for one benign / attack pair of score arrays."""
    return {"auroc": auroc(benign, attack), "aupr": aupr(benign, attack),
            "fpr_at_95_tpr": fpr_at_tpr(benign, attack, 0.95), "fpr_at_90_tpr": fpr_at_tpr(benign, attack, 0.90),
            "tpr_at_1_fpr": tpr_at_fpr(benign, attack, 0.01)}


def threshold_at_fpr(benign_scores: np.ndarray, target_fpr: float) -> float:
    """The score above which at most ``target_fpr`` of the given benign scores lie."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    s = np.asarray(benign_scores, dtype=np.float64).ravel()
    if len(s) == 0:
        raise ValueError("no benign scores to calibrate a threshold on")
    return float(np.quantile(s, 1.0 - target_fpr, method="higher"))


@dataclass(frozen=True)
class Mix:
    """Indices of the benign and attack scores kept to reach a malicious ratio."""

    benign: np.ndarray
    attack: np.ndarray


def mix_at_ratio(n_benign: int, n_attack: int, ratio: float, seed: int) -> Mix:
    """Subsample one side (never both, never with repetition) so that attack / total == ``ratio``.

    The side that is in excess is subsampled at random (seeded); each side keeps at least one sample.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"malicious ratio must be in (0, 1), got {ratio}")
    rng = np.random.default_rng(seed)
    want_attack = ratio / (1.0 - ratio) * n_benign
    if want_attack <= n_attack:
        k = max(1, int(round(want_attack)))
        return Mix(np.arange(n_benign), np.sort(rng.choice(n_attack, size=min(k, n_attack), replace=False)))
    k = max(1, int(round(n_attack * (1.0 - ratio) / ratio)))
    return Mix(np.sort(rng.choice(n_benign, size=min(k, n_benign), replace=False)), np.arange(n_attack))


def roc_points(benign: np.ndarray, attack: np.ndarray, max_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve, thinned to at most ``max_points`` points for plotting."""
    y, s = _labels(benign, attack)
    fpr, tpr, _ = roc_curve(y, s)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr
