"""Metrics, registered by name. Each is a function of an evaluation context returning a float.

``scope="extraction"`` metrics are computed for every thief at every checkpoint;
``scope="utility"`` metrics once per defence (the cost of a defence to honest users).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .registry import NoParams, metrics

_EPS = 1e-12


@dataclass(frozen=True)
class ExtractionEval:
    """Victim (raw, undefended) and thief probabilities on the test set and on uniform inputs."""

    victim_test: np.ndarray
    thief_test: np.ndarray
    y_test: np.ndarray | None
    victim_unif: np.ndarray | None
    thief_unif: np.ndarray | None
    queries_used: int


@dataclass(frozen=True)
class UtilityEval:
    """The victim's raw and defended outputs on the test set."""

    raw_test: np.ndarray
    defended_test: np.ndarray
    y_test: np.ndarray | None


def agreement(p: np.ndarray, q: np.ndarray) -> float:
    """Share of rows whose top classes agree."""
    return float(np.mean(np.argmax(p, axis=1) == np.argmax(q, axis=1)))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over rows of 0.5 * sum |p - q| (Tramèr et al.'s R)."""
    return float(np.mean(0.5 * np.abs(p - q).sum(axis=1)))


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over rows of KL(p || q) in nats, with probabilities clipped at 1e-12."""
    p = np.clip(p, _EPS, 1.0)
    q = np.clip(q, _EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def accuracy(p: np.ndarray, y: np.ndarray | None) -> float:
    if y is None:
        return float("nan")
    return float(np.mean(np.argmax(p, axis=1) == y))


@metrics.register("fidelity", scope="extraction")
def fidelity(ev: ExtractionEval) -> float:
    """Label agreement between thief and (undefended) victim on the test set (higher = better copy)."""
    return agreement(ev.thief_test, ev.victim_test)


@metrics.register("accuracy", scope="extraction")
def thief_accuracy(ev: ExtractionEval) -> float:
    """Thief accuracy on the test set's true labels."""
    return accuracy(ev.thief_test, ev.y_test)


@metrics.register("r_test", scope="extraction")
def r_test(ev: ExtractionEval) -> float:
    """Mean total-variation distance thief vs victim on the test set (Tramèr's R_test; lower = better copy)."""
    return total_variation(ev.thief_test, ev.victim_test)


@metrics.register("r_unif", scope="extraction")
def r_unif(ev: ExtractionEval) -> float:
    """Mean total-variation distance thief vs victim on uniform random inputs (Tramèr's R_unif)."""
    if ev.victim_unif is None or ev.thief_unif is None:
        return float("nan")
    return total_variation(ev.thief_unif, ev.victim_unif)


@metrics.register("fidelity_unif", scope="extraction")
def fidelity_unif(ev: ExtractionEval) -> float:
    """Label agreement thief vs victim on uniform random inputs."""
    if ev.victim_unif is None or ev.thief_unif is None:
        return float("nan")
    return agreement(ev.thief_unif, ev.victim_unif)


@metrics.register("kl", scope="extraction")
def kl(ev: ExtractionEval) -> float:
    """Mean KL(victim || thief) on the test set, in nats."""
    return kl_divergence(ev.victim_test, ev.thief_test)


@metrics.register("queries_used", scope="extraction")
def queries_used(ev: ExtractionEval) -> float:
    """Queries the attack had spent at this checkpoint (counted at the oracle)."""
    return float(ev.queries_used)


@metrics.register("victim_accuracy", scope="utility")
def victim_accuracy(ev: UtilityEval) -> float:
    """Accuracy of the defended answers on the test set (what honest users get)."""
    return accuracy(ev.defended_test, ev.y_test)


@metrics.register("output_distortion", scope="utility")
def output_distortion(ev: UtilityEval) -> float:
    """Mean L1 distance between defended and raw probability vectors on the test set."""
    return float(np.mean(np.abs(ev.defended_test - ev.raw_test).sum(axis=1)))


@metrics.register("label_change_rate", scope="utility")
def label_change_rate(ev: UtilityEval) -> float:
    """Share of test inputs whose top class the defence changed."""
    return 1.0 - agreement(ev.defended_test, ev.raw_test)


# Metrics written by the runner itself (not computed from an evaluation context).
@metrics.register("attack_seconds", scope="extraction", computed_by_runner=True)
def attack_seconds(ev: ExtractionEval) -> float:
    """Wall time of the attack up to this checkpoint, thief training included (written by the runner)."""
    return float("nan")


# Service metrics: written by the runner from the oracle's per-client record, for the honest users
# (utility rows) and for the attacker (extraction rows). They matter under active defences.
def _runner_written(name: str, scope: str, doc: str) -> None:
    def metric(ev) -> float:
        return float("nan")

    metric.__doc__ = doc + " (written by the runner)"
    metric.__name__ = name
    metrics.register(name, scope=scope, computed_by_runner=True)(metric)


_runner_written("server_queries_used", "extraction", "kind: remote only: queries the endpoint reported charging "
                "the attacker's key since the cell began (beside queries_used, counted on this side)")
_runner_written("answered_share", "service", "Share of the client's queries answered in full (not refused, "
                "not downgraded, not misinformed)")
_runner_written("latency_mean_ms", "service", "Mean response time per query in milliseconds, proof-of-work included")
_runner_written("latency_p95_ms", "service", "95th percentile of the response time per query in milliseconds")

# Detection metrics (kind 'detection': one row per detector x attack x detection budget).
for _name, _doc in (("auroc", "Area under the ROC curve, attack queries as positives"),
                    ("aupr", "Area under the precision-recall curve (average precision), attack = positive"),
                    ("fpr_at_95_tpr", "False-positive rate on benign queries when 95% of attack queries are caught"),
                    ("fpr_at_90_tpr", "False-positive rate on benign queries when 90% of attack queries are caught"),
                    ("tpr_at_1_fpr", "Share of attack queries caught at 1% false positives on benign queries"),
                    ("queries_to_flag", "Per-client detectors: queries an attacking client sends before it is "
                                        "flagged (NaN = never)"),
                    ("clients_flagged", "Per-client detectors: share of the attack's client ids that are flagged"),
                    ("benign_flagged", "Per-client detectors: 1 when the benign client is flagged")):
    _runner_written(_name, "detection", _doc)
# Detector cost rows (kind 'detector': one row per detector).
for _name, _doc in (("fit_seconds", "Seconds to fit the detector (0 when loaded from the cache: see the log)"),
                    ("score_ms_per_query", "Milliseconds to score one query (batched)"),
                    ("victim_ms_per_query", "Milliseconds of the victim's own inference per query (batched)"),
                    ("score_cost_ratio", "Scoring time over the victim's inference time"),
                    ("served_accuracy", "Test accuracy of the model answering queries under the detector "
                                        "(OE and EDM replace the victim)")):
    _runner_written(_name, "detector", _doc)

# Ownership rows (kind 'ownership': one row per scheme x suspect x metric; the scheme in the 'scheme' column).
for _name, _doc in (("statistic", "Ownership: the scheme's statistic on the suspect (trigger or watermark accuracy, "
                                  "fingerprint agreement, Welch t)"),
                    ("p_value", "Ownership: p-value of 'the suspect is independent of the victim' (exact binomial "
                                "or Welch's t-test)"),
                    ("detected", "Ownership: 1 when the suspect is flagged as a copy (p_value < alpha), else 0"),
                    ("verification_queries", "Ownership: black-box queries the verification sent to the suspect"),
                    ("copy_fidelity", "Ownership: the stolen copy's fidelity to the victim on the test set"),
                    ("accuracy_before", "Ownership cost: the victim's test accuracy without the scheme"),
                    ("accuracy_after", "Ownership cost: the test accuracy honest users get with the scheme"),
                    ("accuracy_cost", "Ownership cost: accuracy_before - accuracy_after (fraction; 0.005 = 0.5 "
                                      "points)"),
                    ("embedding_seconds", "Ownership cost: seconds to embed the scheme's mark (0 when cached)"),
                    ("false_claim_success", "False claims: share of independent models the forged evidence "
                                            "flags at alpha")):
    _runner_written(_name, "ownership", _doc)

# Interactions rows (kind 'interaction': one row per deployment x figure; an ownership member's id in the 'scheme'
# column) and the conflict rule's (kind 'conflict': per pair, the figure's symbol in the 'scheme' column).
for _name, _doc in (("phi_acc", "Interactions: accuracy honest users get from the deployment (through the API)"),
                    ("raw_accuracy", "Interactions: accuracy of the deployment's network without its serving layers"),
                    ("robust_accuracy", "Interactions: accuracy under ART's L-infinity PGD (white-box)"),
                    ("mi_advantage", "Interactions: membership-inference advantage TPR - FPR (ART "
                                     "MembershipInferenceBlackBox through the API)"),
                    ("mi_tpr", "Interactions: members flagged by the membership-inference attack"),
                    ("mi_fpr", "Interactions: non-members flagged by the membership-inference attack"),
                    ("epsilon", "Interactions: DP-SGD's epsilon at its delta (Opacus' accountant)"),
                    ("noise_multiplier", "Interactions: DP-SGD's noise multiplier"),
                    ("copy_accuracy", "Interactions: test accuracy of the copy stolen through the API"),
                    ("trigger_accuracy", "Interactions: the backdoor watermark's trigger accuracy through the API"),
                    ("ownership_confidence", "Interactions: 1 - p of an ownership scheme's verification"),
                    ("measure_seconds", "Interactions: seconds to measure the deployment"),
                    ("conflict", "Interactions: 1 when the pair conflicts (on any figure), else 0"),
                    ("phi_conflict", "Interactions: 1 when the pair conflicts on the figure in the scheme column"),
                    ("phi_drop", "Interactions: how far the pair is worse than the defence alone on the figure in "
                                 "the scheme column (fraction; positive = worse)"),
                    ("risk_change", "Interactions: change of the other risk in the scheme column against no defence")):
    _runner_written(_name, "interaction", _doc)

# Figures of Tramèr et al.'s extracted copies (``extra_metrics()``, and the parameter errors the runner
# computes); written next to the standard metrics. Registered so that gates and `stealcheck list` know them.
def _attack_reported(name: str, doc: str, source: str = "reported by the attack") -> None:
    def metric(ev: ExtractionEval) -> float:
        return float("nan")

    metric.__doc__ = f"{doc} ({source})"
    metric.__name__ = name
    metrics.register(name, scope="extraction", computed_by_runner=True)(metric)


for _name, _doc in (
        ("unknowns", "Parameters of the extracted model family (Tramèr's 'unknowns')"),
        ("queries_per_unknown", "Queries used as a multiple of the number of unknowns"),
        ("param_max_abs_error", "Largest absolute difference between extracted and victim parameters "
                                "(linear victims; softmax parameters centred over classes)"),
        ("param_rel_error", "L2 norm of the parameter error over that of the victim's parameters (linear victims)"),
        ("solve_residual", "RMS residual of equation solving's logit equations (binary_lr; ~0 when the budget "
                           "equals the unknowns)"),
        ("condition_number", "Condition number of equation solving's query matrix [x, 1] (binary_lr; inf when "
                             "underdetermined)"),
        ("saturated_share", "Share of equation-solving answers within 1e-12 of 0 or 1, whose logit is lost "
                            "(binary_lr)"),
        ("direction_cosine", "Cosine between the extracted and the victim's weight vectors (Lowd-Meek)"),
        ("boundary_points", "Decision-boundary points found (Lowd-Meek)"),
        ("leaves_found", "Distinct victim leaves the tree attack reached"),
        ("extracted_leaves", "Leaves of the extracted tree (more than leaves_found when a leaf spans several regions)"),
        ("queries_per_leaf", "Queries used per victim leaf found (tree attacks)")):
    # The parameter comparisons need the victim's true parameters, which the attack never sees: the
    # runner computes them after the attack (ExtractedClassifier.compare_with_victim).
    _attack_reported(_name, _doc, "computed by the runner from the copy and the victim"
                     if _name in ("param_max_abs_error", "param_rel_error", "direction_cosine")
                     else "reported by the attack")


def metric_scope(name: str) -> str:
    return metrics.get(name).caps.scope


__all__ = ["ExtractionEval", "UtilityEval", "NoParams"]
