"""Detection metrics against hand-made ROC cases."""

import numpy as np
import pytest

from stealcheck.detection import (aupr, auroc, detection_metrics, fpr_at_tpr, mix_at_ratio, threshold_at_fpr,
                                  tpr_at_fpr)

BENIGN = np.array([0.0, 1.0, 2.0, 3.0])
ATTACK = np.array([2.5, 3.5, 4.0, 5.0])


def test_auroc_counts_ordered_pairs():
    # 15 of the 16 (attack, benign) pairs are ordered correctly: only 2.5 < 3.
    assert auroc(BENIGN, ATTACK) == pytest.approx(15 / 16)
    assert auroc(ATTACK, BENIGN) == pytest.approx(1 / 16)


def test_perfect_and_chance():
    assert auroc([0, 1], [2, 3]) == 1.0
    assert fpr_at_tpr([0, 1], [2, 3], 0.95) == 0.0
    assert tpr_at_fpr([0, 1], [2, 3], 0.01) == 1.0
    rng = np.random.default_rng(0)
    same = auroc(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same - 0.5) < 0.03


def test_fpr_at_tpr_on_a_step():
    # To catch 95% of attacks the threshold must go below 2.5, which flags the benign 3: FPR 1/4.
    assert fpr_at_tpr(BENIGN, ATTACK, 0.95) == pytest.approx(0.25)
    assert fpr_at_tpr(BENIGN, ATTACK, 0.75) == pytest.approx(0.0)


def test_fpr_at_tpr_interpolates_between_roc_points():
    # Ten attack scores, two benign scores inside the attack range: TPR 0.9 needs 1 FP, 1.0 needs 2.
    benign = np.array([-5.0, -4.0, -3.0, 0.45, 0.05])
    attack = np.linspace(0.0, 0.9, 10)
    # ROC: ... (fpr 0.2, tpr 0.5) -> (0.2, 0.9) at 0.05? compute by brute force with thresholds
    def brute(tpr):
        best = []
        for t in np.sort(np.concatenate([benign, attack])):
            tp = np.mean(attack >= t)
            fp = np.mean(benign >= t)
            best.append((tp, fp))
        pts = sorted(best, key=lambda p: (p[0], p[1]))
        return min(fp for tp, fp in pts if tp >= tpr)
    # At exact ROC points the interpolated value equals the brute-force minimum.
    assert fpr_at_tpr(benign, attack, 0.9) == pytest.approx(brute(0.9))
    assert fpr_at_tpr(benign, attack, 1.0) == pytest.approx(brute(1.0))
    # In between two points it lies between them.
    mid = fpr_at_tpr(benign, attack, 0.95)
    assert brute(0.9) <= mid <= brute(1.0)


def test_tpr_at_fpr_takes_best_tpr_among_tied_fprs():
    # Best point at FPR 0 is TPR 0.75 (not 0); then linear towards (0.25, 1.0).
    assert tpr_at_fpr(BENIGN, ATTACK, 0.0) == pytest.approx(0.75)
    assert tpr_at_fpr(BENIGN, ATTACK, 0.01) == pytest.approx(0.75 + 0.01 / 0.25 * 0.25)
    assert tpr_at_fpr(BENIGN, ATTACK, 0.25) == pytest.approx(1.0)


def test_aupr_depends_on_ratio_and_all_metrics_present():
    rng = np.random.default_rng(1)
    b = rng.normal(0, 1, 2000)
    a = rng.normal(1.5, 1, 2000)
    assert aupr(b, a[:100]) < aupr(b, a)
    m = detection_metrics(b, a)
    assert set(m) == {"auroc", "aupr", "fpr_at_95_tpr", "fpr_at_90_tpr", "tpr_at_1_fpr"}
    assert 0.8 < m["auroc"] < 0.9  # Φ(1.5/√2) ≈ 0.856


def test_threshold_reaches_target_fpr():
    rng = np.random.default_rng(2)
    cal, held = rng.normal(size=5000), rng.normal(size=5000)
    t = threshold_at_fpr(cal, 0.05)
    assert np.mean(cal > t) <= 0.05
    assert abs(np.mean(held > t) - 0.05) < 0.01


def test_mix_at_ratio():
    m = mix_at_ratio(1000, 1000, 0.5, seed=0)
    assert len(m.benign) == 1000 and len(m.attack) == 1000
    m = mix_at_ratio(1000, 1000, 0.1, seed=0)
    assert len(m.benign) == 1000 and len(m.attack) == 111
    m = mix_at_ratio(1000, 1000, 0.9, seed=0)
    assert len(m.attack) == 1000 and len(m.benign) == 111
    assert len(np.unique(m.benign)) == len(m.benign)


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="need benign and attack"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="ratio"):
        mix_at_ratio(10, 10, 1.0, 0)
