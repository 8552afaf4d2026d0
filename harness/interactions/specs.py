"""The interactions section, declared without importing torch, ART or Opacus: the training-time defences'
parameters, what each kind of member changes (its slot), the figures the conflict rule reads and their
default tolerances.

A member of ``interactions.defences`` is one of:

- a **training-time defence** (``stealcheck list training``): DP-SGD through Opacus, adversarial training
  through ART's trainer; or an ownership scheme that embeds its mark in training (the backdoor watermark);
- a **serving-time defence**: an output perturbation of the ``defences`` registry (rounded, reverse_sigmoid,
  label_only, chain, ...), an active defence driven by a declared detector (reject, pow, misinformation), or
  an ownership scheme that marks the API's answers (DAWN);
- an **ownership check**: a scheme that only observes (conferrable fingerprints, dataset inference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from stealcheck.registry import PARAMS_CONFIG, training


class DPSGDParams(BaseModel):
    """DP-SGD (Abadi et al. 2016) through Opacus' PrivacyEngine: per-sample gradients clipped to
    ``max_grad_norm`` and Gaussian noise; epsilon reported at a fixed ``delta`` by Opacus' accountant."""

    model_config = PARAMS_CONFIG
    noise_multiplier: float | None = Field(1.0, gt=0, le=100, description="noise standard deviation over the "
                                           "clipping norm; ignored when target_epsilon is set")
    target_epsilon: float | None = Field(None, gt=0, le=1000, description="train to this epsilon instead: Opacus "
                                         "picks the noise multiplier for the recipe's steps and sampling rate")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample gradient clipping norm")
    delta: float = Field(1e-5, gt=0, lt=1, description="the fixed delta epsilon is reported at")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Opacus' privacy accountant")

    @model_validator(mode="after")
    def _noise(self) -> "DPSGDParams":
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("give noise_multiplier or target_epsilon")
        return self


class AdversarialTrainingParams(BaseModel):
    """Adversarial training (Madry et al. 2018) with ART's AdversarialTrainer and ProjectedGradientDescent:
    a share ``ratio`` of every batch replaced by its L-infinity PGD adversarial examples."""

    model_config = PARAMS_CONFIG
    eps: float = Field(0.1, gt=0, description="L-infinity bound of the training perturbation (input units)")
    eps_step: float = Field(0.025, gt=0, description="PGD step size (input units)")
    max_iter: int = Field(5, ge=1, le=100, description="PGD iterations per batch")
    ratio: float = Field(0.5, gt=0, le=1, description="share of each batch replaced by adversarial examples "
                         "(1.0 = Madry et al.'s)")


training.declare("dp_sgd", "stealcheck.interactions.training:DPSGD", params=DPSGDParams,
                 summary="DP-SGD through Opacus (PrivacyEngine): clipped per-sample gradients and Gaussian noise; "
                         "epsilon at a fixed delta, or a target epsilon.",
                 metrics=("epsilon", "mi_advantage"))
training.declare("adversarial_training", "stealcheck.interactions.training:AdversarialTraining",
                 params=AdversarialTrainingParams,
                 summary="Adversarial training through ART's AdversarialTrainer with ProjectedGradientDescent "
                         "(Madry et al.); measured by PGD robust accuracy.",
                 metrics=("robust_accuracy",))


# ---------------------------------------------------------------- the figures and their tolerances


@dataclass(frozen=True)
class Figure:
    """A figure the conflict rule reads: its symbol, which way is better, its default tolerance."""

    name: str
    symbol: str
    higher_is_better: bool
    tolerance: float
    doc: str


FIGURES = {f.name: f for f in (
    Figure("phi_acc", "phi_ACC", True, 0.01, "accuracy honest users get from the deployed combination (test set)"),
    Figure("robust_accuracy", "phi_ADV", True, 0.05, "accuracy under ART's L-infinity PGD (white-box, on the "
           "deployed network)"),
    Figure("mi_advantage", "phi_MI", False, 0.05, "membership-inference advantage (TPR - FPR) of ART's "
           "MembershipInferenceBlackBox through the API"),
    Figure("epsilon", "epsilon", False, 0.5, "DP-SGD's epsilon at the fixed delta (Opacus' accountant)"),
    Figure("trigger_accuracy", "phi_WM", True, 0.05, "the backdoor watermark's trigger accuracy through the API"),
    Figure("ownership_confidence", "phi_OWN", True, 0.01, "1 - p of the ownership scheme's verification (dataset "
           "inference: on the deployed victim; fingerprints and DAWN: on the Knockoff copy)"),
    Figure("copy_fidelity", "phi_EXT", False, 0.05, "fidelity of a copy stolen through the API (the "
           "interactions' extraction attack) to the deployed network"),
    Figure("auroc", "phi_DET", True, 0.05, "AUROC of an active defence's detector: the extraction attack's queries "
           "against the benign evaluation split (the detector fitted on the deployment's network)"),
)}

#: the "other risk" columns: risk name -> the figure that measures it (higher = the risk is larger unless
#: the figure is higher_is_better, e.g. robust accuracy: higher = less evasion)
RISKS = {"membership_inference": "mi_advantage", "evasion": "robust_accuracy", "extraction": "copy_fidelity"}

#: an ownership scheme's symbol in the matrix
SCHEME_SYMBOLS = {"backdoor": "phi_WM", "dataset_inference": "phi_DI", "fingerprint": "phi_FP", "dawn": "phi_DAWN"}


# ---------------------------------------------------------------- members and the pairs they can form


@dataclass(frozen=True)
class Member:
    """One resolved member of interactions.defences."""

    id: str
    plugin: str
    registry: Literal["training", "ownership", "defences"]
    params: Any
    role: Literal["training", "serving", "check"]
    slot: str  # two members in one slot cannot form a pair
    figures: tuple[str, ...]  # its own figures (the conflict rule)

    def to_dict(self) -> dict:
        return {"id": self.id, "plugin": self.plugin, "registry": self.registry, "role": self.role,
                "params": self.params.model_dump(mode="json"), "figures": list(self.figures)}

    def symbol(self, figure: str) -> str:
        if figure == "ownership_confidence" or (figure == "trigger_accuracy" and self.plugin == "backdoor"):
            return SCHEME_SYMBOLS.get(self.plugin, f"phi_{self.plugin}")
        return FIGURES[figure].symbol


SLOT_REASONS = {
    "serving:answers": "both rewrite the API's answers and the order matters: declare the combination as one "
                       "defence, {chain: [...]}, and list it as a member",
    "serving:mark": "both mark the API's answers; deploy one API watermark at a time",
    "serving:active": "both act on the queries a detector flags; deploy one active defence at a time",
    "training:mark": "both embed a watermark in training; list one of them per run",
}


def pair_problem(a: Member, b: Member) -> str | None:
    """Why ``a`` and ``b`` cannot be deployed as a pair (None: they can)."""
    if a.slot != b.slot:
        return None
    if a.role == "check":
        return (f"'{a.id}' and '{b.id}' only observe the model: the pair is each check on the same deployment, "
                "so it has nothing to measure")
    if a.slot in SLOT_REASONS:
        return f"'{a.id}' and '{b.id}': {SLOT_REASONS[a.slot]}"
    return f"'{a.id}' and '{b.id}' are two configurations of the same training-time defence ({a.plugin})"


def combination_id(members: tuple[Member, ...]) -> str:
    """The id of a deployed combination: 'none', a member's id, or 'a+b' (declaration order)."""
    return "+".join(m.id for m in members) if members else "none"


__all__ = ["DPSGDParams", "AdversarialTrainingParams", "FIGURES", "RISKS", "Member", "pair_problem",
           "combination_id"]
