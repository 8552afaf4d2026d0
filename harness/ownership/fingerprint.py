"""Fingerprinting with conferrable adversarial examples (Lukas, Zhang, Kerschbaum; ICLR 2021).

The defender trains surrogates (it extracts its own victim: the victim's probabilities on its training
inputs) and reference models (the true labels, independently of the victim). From private samples it
crafts perturbations (L-infinity ball of ``eps``) towards the victim's second most likely class that
the victim and its surrogates follow and the references do not: projected sign-gradient steps on

    CE(victim(x'), t) + mean_s CE(S(x'), t) - mean_r log(1 - R(x')_t)

and keeps the ``size`` most conferrable of ``size * candidates`` tries (conferrability
``mean_s S(x')_y * (1 - mean_r R(x')_y)`` with y the victim's label on x'). Their labels are the
victim's. A suspect is scored by its agreement with those labels. The null rate is the highest
agreement among calibration references, trained like the references but never used to craft, and
the exact binomial test against it gives the p-value (the threshold is thus set for a false-positive
rate alpha on models like the references). ART has no loss with models to avoid, so the optimisation
is written here in a few lines of torch.
"""

from __future__ import annotations

import numpy as np

from stealcheck.seeds import derive_seed

from .base import Evidence, OwnershipContext, OwnershipScheme, Suspect, Verdict, label_agreement_verdict
from .specs import FingerprintParams


def _probs(net, x):
    import torch

    return torch.softmax(net(x), dim=1)


def craft_conferrable(victim_net, surrogates: list, references: list, x: np.ndarray, *, eps: float, steps: int,
                      step_size: float, clip_values: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(x', conferrability) for each sample in ``x``."""
    import torch
    import torch.nn.functional as F

    nets = [victim_net, *surrogates, *references]
    for n in nets:
        n.eval()
        for prm in n.parameters():
            prm.requires_grad_(False)
    x0 = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    lo, hi = clip_values
    with torch.no_grad():
        target = _probs(victim_net, x0).topk(2, dim=1).indices[:, 1]
    adv = x0.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(victim_net(adv), target)
        loss = loss + sum(F.cross_entropy(s(adv), target) for s in surrogates) / len(surrogates)
        ref_p = torch.stack([_probs(r, adv).gather(1, target[:, None])[:, 0] for r in references]).mean(0)
        loss = loss - torch.log(torch.clamp(1 - ref_p, min=1e-6)).mean()
        grad, = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv - step_size * grad.sign()
            adv = torch.clamp(torch.min(torch.max(adv, x0 - eps), x0 + eps), lo, hi)
    with torch.no_grad():
        y = _probs(victim_net, adv).argmax(1)
        s = torch.stack([_probs(m, adv).gather(1, y[:, None])[:, 0] for m in surrogates]).mean(0)
        r = torch.stack([_probs(m, adv).gather(1, y[:, None])[:, 0] for m in references]).mean(0)
    return adv.numpy(), (s * (1 - r)).numpy()


class ConferrableFingerprint(OwnershipScheme):
    """Conferrable adversarial examples: agreement with the victim on examples only its copies share."""

    params: FingerprintParams

    def prepare(self, ctx: OwnershipContext) -> Evidence:
        from stealcheck.adapters.networks import one_hot

        p = self.params
        v = ctx.victim
        private = ctx.private
        soft = v.predict_proba(private.x).astype(np.float32)
        truth = one_hot(private.y, ctx.nb_classes)

        def train(kind: str, i: int, targets: np.ndarray):
            return ctx.train_model(private.x, targets, seed=derive_seed(ctx.seed, "fingerprint", kind, i),
                                   steps=p.model_steps)

        surrogates = [train("surrogate", i, soft) for i in range(p.surrogates)]
        references = [train("reference", i, truth) for i in range(p.references)]
        calibration = [train("calibration", i, truth) for i in range(p.calibration_references)]
        rng = np.random.default_rng(derive_seed(ctx.seed, "fingerprint candidates"))
        idx = rng.choice(len(private), size=min(len(private), p.size * p.candidates), replace=False)
        adv, score = craft_conferrable(v.network, surrogates, references, private.x[idx], eps=p.eps, steps=p.steps,
                                       step_size=p.step_size, clip_values=ctx.clip_values)
        keep = np.argsort(-score, kind="stable")[:p.size]
        x = adv[keep]
        labels = v.predict_proba(x).argmax(1)
        from .cells import predict_fn

        agreement = [float(np.mean(predict_fn(m)(x).argmax(1) == labels)) for m in calibration]
        chance = float(min(0.99, max(1.0 / ctx.nb_classes, *agreement)))
        return Evidence({"x": x, "y": labels}, {"chance": chance, "calibration_agreement": agreement,
                                                "mean_conferrability": float(score[keep].mean())})

    def verify(self, suspect: Suspect, evidence: Evidence, ctx: OwnershipContext) -> Verdict:
        return label_agreement_verdict(suspect, evidence.arrays["x"], evidence.arrays["y"], evidence.values["chance"])

    def claim(self, x: np.ndarray, labels: np.ndarray, ctx: OwnershipContext) -> Evidence:
        # The accuser's own "calibration" is what it says it is: the chance rate 1/K.
        return Evidence({"x": np.asarray(x, dtype=np.float32), "y": np.asarray(labels, dtype=np.int64)},
                        {"chance": 1.0 / ctx.nb_classes})
