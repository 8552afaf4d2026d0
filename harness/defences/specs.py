"""Every built-in defence's parameters, declared without importing torch or ART.

``stealcheck validate`` and ``stealcheck list`` read this module only; an implementation (the
module named in its ``declare`` call) is imported when a run first needs it. The query detectors
are declared in :mod:`stealcheck.detectors.specs`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_serializer, field_validator, model_validator

from stealcheck.registry import PARAMS_CONFIG, defences


# ---------------------------------------------------------------- output_perturbation


class RoundedParams(BaseModel):
    model_config = PARAMS_CONFIG
    decimals: int = Field(3, ge=0, le=10, description="decimals kept in each probability")


class ReverseSigmoidParams(BaseModel):
    model_config = PARAMS_CONFIG
    beta: float = Field(1.0, gt=0, description="perturbation magnitude")
    gamma: float = Field(0.1, gt=0, description="perturbation dampening")


class HighConfidenceParams(BaseModel):
    model_config = PARAMS_CONFIG
    cutoff: float = Field(0.25, gt=0, lt=1, description="probabilities below this are set to 0")


class GaussianNoiseParams(BaseModel):
    model_config = PARAMS_CONFIG
    scale: float = Field(0.2, gt=0, description="standard deviation of the added noise")


class ChainParams(BaseModel):
    model_config = PARAMS_CONFIG
    steps: list[Any] = Field(description="defences applied in order, each written as in 'defences'")

    @field_validator("steps")
    @classmethod
    def _resolve(cls, steps: list[Any]) -> list[Any]:
        from stealcheck.errors import ScenarioError
        from stealcheck.scenario import resolve_plugin, split_plugin_item

        if not steps:
            raise ValueError("give at least one step")
        resolved = []
        for i, item in enumerate(steps):
            try:
                # An active defence answers per client from a fitted detector's score; a chain is a
                # stateless pipeline of output perturbations built without detectors. Said first,
                # before the step's own parameters are checked.
                _, name, _ = split_plugin_item(item, f"steps.{i}")
                if name in defences and defences.get(name).caps.needs_detector:
                    raise ValueError(f"steps.{i}: '{name}' is an active defence driven by a detector, which "
                                     "cannot be a chain step; list it as a defence of its own (chains hold output "
                                     "perturbations such as rounded, reverse_sigmoid, label_only)")
                resolved.append(resolve_plugin(defences, item, f"steps.{i}"))
            except ScenarioError as exc:
                raise ValueError(exc.format()) from None
        return resolved

    @field_serializer("steps")
    def _dump(self, steps: list[Any]) -> list[Any]:
        return [s.to_dict() if hasattr(s, "to_dict") else s for s in steps]


defences.declare(
    "none", "stealcheck.defences.output_perturbation:NoDefence",
    summary="No defence: the victim's outputs as they are (the baseline of every report).")

defences.declare(
    "rounded", "stealcheck.defences.output_perturbation:RoundedDefence",
    params=RoundedParams,
    summary="Round the probabilities to a few decimals (ART Rounded).")

defences.declare(
    "reverse_sigmoid", "stealcheck.defences.output_perturbation:ReverseSigmoidDefence",
    params=ReverseSigmoidParams,
    summary="Reverse sigmoid perturbation of the probabilities (ART ReverseSigmoid, NaN rows made uniform).")

defences.declare(
    "high_confidence", "stealcheck.defences.output_perturbation:HighConfidenceDefence",
    params=HighConfidenceParams,
    summary="Zero every probability below a cutoff (ART HighConfidence).")

defences.declare(
    "gaussian_noise", "stealcheck.defences.output_perturbation:GaussianNoiseDefence",
    params=GaussianNoiseParams,
    summary="Add Gaussian noise to the probabilities and renormalise (ART GaussianNoise; uses np.random).")

defences.declare(
    "label_only", "stealcheck.defences.output_perturbation:LabelOnlyDefence",
    summary="Answer with the top class only (one-hot), correct on batches unlike ART's ClassLabels.")

defences.declare(
    "chain", "stealcheck.defences.output_perturbation:ChainDefence",
    params=ChainParams,
    summary="Several defences applied one after the other, e.g. reverse_sigmoid then rounded.")


# ---------------------------------------------------------------- active


class _DetectorParams(BaseModel):
    model_config = PARAMS_CONFIG
    detector: str = Field(description="id of a detector in the scenario's 'detectors' list; "
                                      "its score drives this defence")
    target_fpr: float = Field(0.05, gt=0, lt=1,
                              description="share of benign calibration queries allowed above the threshold")


class RejectParams(_DetectorParams):
    mode: Literal["refuse", "label_only"] = Field(
        "refuse",
        description="above the threshold: 'refuse' (uniform answer) or 'label_only' (one-hot of the top class)")


class PowParams(_DetectorParams):
    base_bits: int = Field(0, ge=0, le=32, description="difficulty at or below the threshold (0 = no puzzle)")
    min_bits: int = Field(8, ge=0, le=32, description="difficulty just above the threshold")
    max_bits: int = Field(14, ge=0, le=32,
                          description="difficulty for scores 'ramp' calibration std or more above the threshold "
                                      "(SHA-256 in Python, ~0.5M hashes/s: 14 bits ~ 35 ms, 20 bits ~ 2 s)")
    ramp: float = Field(3.0, gt=0, description="score distance above the threshold, in std of the benign scores, "
                                               "over which the difficulty rises from min_bits to max_bits")
    seed: int | None = Field(None, description="seed for the challenges (reproducible work); None = os randomness")

    @model_validator(mode="after")
    def _ordered(self) -> "PowParams":
        if not self.min_bits <= self.max_bits:
            raise ValueError(f"min_bits ({self.min_bits}) must not exceed max_bits ({self.max_bits})")
        return self


class MisinformationParams(_DetectorParams):
    k: float | None = Field(None, gt=0, description="steepness of a = sigmoid(k (score - tau)); "
                                                    "None = 10 / std of the benign calibration scores")
    misinformation: Literal["reverse", "uniform_other"] = Field(
        "reverse", description="the wrong answer blended in: 'reverse' = softmax(-log y) (mass on the least likely "
                               "classes), 'uniform_other' = uniform over all classes but the top one")


defences.declare(
    "reject", "stealcheck.defences.active:RejectDefence",
    params=RejectParams,
    needs_detector=True,
    summary="Reject queries whose detector score is above the target-FPR threshold (refuse or label only).")

defences.declare(
    "pow", "stealcheck.defences.active:ProofOfWorkDefence",
    params=PowParams,
    needs_detector=True,
    summary="Proof of work (Dziedzic et al., ICLR 2022): SHA-256 hashcash, harder for higher detector scores.")

defences.declare(
    "misinformation", "stealcheck.defences.active:MisinformationDefence",
    params=MisinformationParams,
    needs_detector=True,
    summary="Adaptive misinformation (Kariyappa & Qureshi, CVPR 2020): blend in a wrong answer as the score rises.")
