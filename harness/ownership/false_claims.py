"""False claims against ownership schemes (Liu, Zhang, Szyller, Ren, Asokan; USENIX Security 2024).

The malicious accuser trains a model of its own, crafts targeted adversarial examples on it with ART's
projected gradient descent (chosen target labels), keeps those that fool its own model, and presents
them with their target labels as the scheme's evidence (trigger set, fingerprints, API marks). The
claim succeeds against an independent model when the scheme's own verification flags it at alpha:
the examples transfer, so the independent model agrees with the chosen labels far above chance.

Each claim is judged under three rules:

- ``none``: the verifier takes the evidence as presented;
- ``commitment``: the evidence must have been committed (SHA-256 of the evidence, with a trusted
  timestamp) before the suspect existed. Here the accuser crafts after the independent models were
  trained, so its commitment is too late; an accuser that crafts and commits in advance (it needs
  only its own model) faces the ``none`` rule, which is the talk's point about timestamps;
- ``verifier_generated``: the verifier draws the labels itself (uniformly at random, from its own
  seed), so the accuser can no longer choose the targets its examples were crafted for.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np

from stealcheck.seeds import derive_seed

from .base import OwnershipContext

MITIGATIONS = ("none", "commitment", "verifier_generated")


def craft_false_evidence(accuser_net: Any, x0: np.ndarray, targets: np.ndarray, *, eps: float, steps: int,
                         clip_values: tuple[float, float], nb_classes: int) -> np.ndarray:
    """Targeted L-infinity PGD (ART) on the accuser's own network."""
    import torch.nn as nn
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from stealcheck.adapters.networks import one_hot

    clf = PyTorchClassifier(model=accuser_net, loss=nn.CrossEntropyLoss(), input_shape=tuple(x0.shape[1:]),
                            nb_classes=nb_classes, clip_values=tuple(clip_values), device_type="cpu")
    pgd = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=max(eps / 10, eps * 2.5 / steps),
                                   max_iter=steps, targeted=True, num_random_init=0, batch_size=128, verbose=False)
    return pgd.generate(np.asarray(x0, dtype=np.float32), y=one_hot(targets, nb_classes)).astype(np.float32)


def false_claim_rows(w: Any, scheme_id: str, scheme: Any, ctx: OwnershipContext, accuser_net: Any,
                     independents: dict[str, Any], meta: dict[str, dict]) -> list[dict]:
    """Forge evidence for ``scheme`` and present it against every independent model, under each mitigation."""
    from .cells import _rows, as_suspect, predict_fn

    spec = w.scenario.model.ownership.false_claims
    alpha = ctx.alpha
    k = ctx.nb_classes
    seed = w.scenario.model.data_seed
    rng = np.random.default_rng(derive_seed(seed, "false claim", scheme_id))
    pool = w.data(spec.accuser_data or "attacker")
    idx = rng.choice(len(pool), size=min(len(pool), spec.samples * 2), replace=False)
    x0 = pool.x[idx]
    own = predict_fn(accuser_net)(x0).argmax(1)
    targets = (own + rng.integers(1, k, len(x0))) % k  # a chosen label, never the accuser's own answer
    x_adv = craft_false_evidence(accuser_net, x0, targets, eps=spec.eps, steps=spec.steps,
                                 clip_values=ctx.clip_values, nb_classes=k)
    fooled = predict_fn(accuser_net)(x_adv).argmax(1) == targets  # the accuser presents what fools its own model
    keep = np.flatnonzero(fooled)[:spec.samples]
    if len(keep) == 0:
        keep = np.arange(min(len(x_adv), spec.samples))
    x_claim, y_claim = x_adv[keep], targets[keep]
    forged = scheme.claim(x_claim, y_claim, ctx)
    committed_at = datetime.now(timezone.utc)  # the accuser commits to its forgery once it has crafted it
    verifier_labels = np.random.default_rng(derive_seed(seed, "verifier labels", scheme_id)).integers(0, k, len(keep))
    drawn = scheme.claim(x_claim, verifier_labels, ctx)

    rows: list[dict] = []
    own_verdict = scheme.verify(as_suspect(w, "accuser", accuser_net, "accuser"), forged, ctx)
    rows += _rows(w, scheme_id, "none", "false_claim:accuser_own_model", "", "",
                  {"statistic": own_verdict.statistic, "p_value": own_verdict.p_value,
                   "detected": float(own_verdict.detected(alpha))})
    success = {m: [] for m in MITIGATIONS}
    for name, net in independents.items():
        suspect_name = f"false_claim:independent:{name}"
        verdict = scheme.verify(as_suspect(w, suspect_name, net, "independent"), forged, ctx)
        created = datetime.fromisoformat(meta[name]["created_at"])
        in_time = committed_at < created
        checked = scheme.verify(as_suspect(w, suspect_name, net, "independent"), drawn, ctx)
        outcomes = {"none": (verdict, verdict.detected(alpha)),
                    "commitment": (verdict, verdict.detected(alpha) and in_time),
                    "verifier_generated": (checked, checked.detected(alpha))}
        for mitigation, (v, flagged) in outcomes.items():
            success[mitigation].append(float(flagged))
            rows += _rows(w, scheme_id, mitigation, suspect_name, "", "",
                          {"statistic": v.statistic, "p_value": v.p_value, "detected": float(flagged),
                           "verification_queries": v.queries})
    for mitigation, flags in success.items():
        rows += _rows(w, scheme_id, mitigation, "false_claim", "", "",
                      {"false_claim_success": float(np.mean(flags)) if flags else float("nan")})
    return rows
