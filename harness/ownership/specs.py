"""Every built-in ownership scheme's parameters, declared without importing torch, ART or scipy.

An ownership scheme answers "is this suspect model a copy of my victim?" in two steps:
``prepare`` (embed a mark where the scheme needs one, and build the evidence) and ``verify``
(black-box queries to the suspect give a statistic and a p-value; the decision is p < alpha).
``stealcheck validate`` and ``stealcheck list`` read this module only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from stealcheck.registry import PARAMS_CONFIG, ownership


class BackdoorParams(BaseModel):
    """Adi et al. (USENIX Security 2018): a trigger set of out-of-distribution samples with random labels,
    fine-tuned into the victim; verified by the suspect's accuracy on it (binomial test against 1/K)."""

    model_config = PARAMS_CONFIG
    trigger: Literal["glyphs", "noise"] = Field("glyphs", description="trigger images: seeded letters rendered "
                                                "like the built-in glyphs set, or seeded noise patterns")
    size: int = Field(100, ge=10, le=10_000, description="number of trigger samples (each gets a random label)")
    finetune_steps: int = Field(400, gt=0, description="fine-tuning steps that embed the trigger set in the "
                                "trained victim (Adam, one-cycle)")
    trigger_share: float = Field(0.25, gt=0, lt=1, description="share of each fine-tuning batch drawn from the "
                                 "trigger set (the rest from the victim's training data)")
    lr: float = Field(3e-3, gt=0, description="peak learning rate of the fine-tuning")


class DawnParams(BaseModel):
    """DAWN (Szyller et al., ACM MM 2021): a keyed hash of each query picks a share r of a client's answers,
    changed deterministically; the (query, changed answer) pairs watermark whatever the client trains."""

    model_config = PARAMS_CONFIG
    rate: float = Field(0.005, gt=0, le=0.5, description="share r of queries whose answer is changed "
                        "(the paper: 0.5%)")
    key: str | None = Field(None, description="the API's secret; null = derived from the scenario's data_seed "
                            "(reproducible runs). Each client's key is HMAC(secret, client id)")


class FingerprintParams(BaseModel):
    """Conferrable adversarial examples (Lukas et al., ICLR 2021): adversarial examples that transfer to the
    victim's surrogates but not to reference models; verified by agreement with the victim's labels."""

    model_config = PARAMS_CONFIG
    size: int = Field(100, ge=10, le=10_000, description="number of fingerprints")
    candidates: int = Field(3, ge=1, le=20, description="candidates crafted per fingerprint kept (the most "
                            "conferrable are kept)")
    surrogates: int = Field(2, ge=1, le=10, description="surrogate models: the defender extracts its own victim "
                            "(victim labels on its training inputs)")
    references: int = Field(2, ge=1, le=10, description="reference models used to craft (trained on the true "
                            "labels, independently of the victim)")
    calibration_references: int = Field(2, ge=1, le=10, description="further reference models, never used to "
                                        "craft: their agreement sets the null rate of the binomial test")
    eps: float = Field(0.25, gt=0, description="L-infinity bound of the perturbation (input units)")
    steps: int = Field(40, gt=0, le=1000, description="gradient steps of the conferrability optimisation")
    step_size: float = Field(0.02, gt=0, description="step size (input units)")
    model_steps: int | None = Field(None, gt=0, description="training steps of each surrogate and reference; "
                                    "null = the victim's")


class DatasetInferenceParams(BaseModel):
    """Dataset inference (Maini et al., ICLR 2021): blind-walk distances to the suspect's decision boundary on
    private vs public samples, a confidence regressor, and a one-sided Welch t-test."""

    model_config = PARAMS_CONFIG
    samples: int = Field(30, ge=5, le=500, description="m: private and public samples each that the suspect is "
                         "queried on (the paper: 10-50)")
    train_samples: int = Field(200, ge=20, le=10_000, description="private and public samples each on which the "
                               "confidence regressor is fitted (features of the victim itself)")
    directions: int = Field(10, ge=1, le=100, description="random directions walked from each sample")
    max_steps: int = Field(40, ge=1, le=1000, description="steps per walk before giving up (distance = max)")
    step_size: float = Field(0.02, gt=0, description="step along a direction of unit L-infinity norm")
    noise: Literal["uniform", "gaussian", "laplace"] = Field("uniform", description="distribution of the "
                                                             "random directions")
    white_box: bool = Field(False, description="when the suspect is a local network, use the white-box "
                            "variant: L1, L2 and L-infinity sizes of ART DeepFool's minimal perturbation "
                            "(its own regressor, fitted on the victim's)")


ownership.declare("backdoor", "stealcheck.ownership.backdoor:BackdoorWatermark", params=BackdoorParams,
                  summary="Adi et al. 2018: trigger set with random labels fine-tuned into the victim; "
                          "binomial test of the suspect's trigger accuracy against 1/K.",
                  embeds="training")
ownership.declare("dawn", "stealcheck.ownership.dawn:Dawn", params=DawnParams,
                  summary="DAWN (Szyller et al. 2021): the API changes a keyed share r of each client's answers; "
                          "binomial test of the suspect's agreement with them against 1/(K-1).",
                  embeds="oracle")
ownership.declare("fingerprint", "stealcheck.ownership.fingerprint:ConferrableFingerprint",
                  params=FingerprintParams,
                  summary="Lukas et al. 2021: conferrable adversarial examples from the victim, its surrogates and "
                          "reference models; binomial test of agreement against the reference models' rate.")
ownership.declare("dataset_inference", "stealcheck.ownership.dataset_inference:DatasetInference",
                  params=DatasetInferenceParams,
                  summary="Maini et al. 2021: blind-walk boundary distances on private vs public samples, a "
                          "confidence regressor, a one-sided Welch t-test.",
                  needs_private_data=True, false_claims=False)
