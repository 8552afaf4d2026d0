"""The heavy query detectors' parameters (SAME, SAME-X, SAME-Y, fusion), declared without importing torch or ART.

``stealcheck validate`` and ``stealcheck list`` read this module only; an implementation (the
module named in its ``declare`` call) is imported when a run first needs it. Detectors whose
modules are light (msp, energy, oe, edm, prada) register with the decorator where they live.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from stealcheck.registry import PARAMS_CONFIG, detectors


# ---------------------------------------------------------------- same


class SameModelParams(BaseModel):
    """What determines the trained MAE + auxiliary model (shared by same, same_x and same_y).

    Defaults: a small MAE (patch 4, width 64, 4 + 1 blocks, 0.26M parameters, 15 epochs) that trains
    in a few minutes on one CPU core for ~4,000 28x28 images. The paper's configuration (CIFAR-10 / 32x32) is
    ``patch_size: 2, embed_dim: 192, depth: 12, num_heads: 3, decoder_embed_dim: 192 (authors' code:
    the same width), decoder_depth: 4, decoder_num_heads: 3, lr: 0.01, weight_decay: 0.05,
    batch_size: 128, warmup_epochs: 50, epochs: 500, pos_embed: learned, loss_on: all``.
    """

    model_config = PARAMS_CONFIG

    patch_size: int = Field(4, gt=0, description="side of the square patches; must divide the input's height and width")
    embed_dim: int = Field(64, gt=0, description="encoder width (paper: 192, ViT-Tiny)")
    depth: int = Field(4, gt=0, description="encoder blocks (paper: 12)")
    num_heads: int = Field(4, gt=0, description="encoder attention heads; must divide embed_dim (paper: 3)")
    decoder_embed_dim: int = Field(64, gt=0, description="decoder width")
    decoder_depth: int = Field(1, gt=0, description="decoder blocks (paper: 4)")
    decoder_num_heads: int = Field(4, gt=0, description="decoder attention heads; must divide decoder_embed_dim")
    mlp_ratio: float = Field(4.0, gt=0, description="hidden width of the blocks' MLP, as a multiple of their width")
    pos_embed: Literal["sincos", "learned"] = Field(
        "sincos", description="'sincos': fixed 2-D sine-cosine position embeddings (He et al.); "
        "'learned': trained ones (the authors' code)")
    mask_ratio: float = Field(0.75, ge=0.0, lt=1.0, description="share of patches masked during training")
    loss_on: Literal["all", "masked"] = Field(
        "all", description="patches whose pixel MSE trains the MAE: 'all' (the authors' code; queries are "
        "scored without masking, so visible patches must be reconstructed too) or 'masked' (He et al.)")
    epochs: int = Field(15, gt=0, description="MAE training epochs over the victim's training set (paper: 500)")
    warmup_epochs: float = Field(1, ge=0, description="linear learning-rate warm-up, in epochs, before a "
                                 "cosine decay to zero (paper: 50)")
    batch_size: int = Field(128, gt=0, description="MAE batch size (paper: 128)")
    lr: float = Field(2e-3, gt=0, description="peak AdamW learning rate of the MAE, betas (0.9, 0.95) (paper: 0.01)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay of the MAE (paper: 0.05)")
    aux_steps: int | None = Field(None, gt=0, description="auxiliary-model optimiser steps; null = the "
                                  "victim's training recipe")
    aux_batch_size: int | None = Field(None, gt=0, description="auxiliary-model batch size; null = the "
                                       "victim's training recipe")
    aux_lr: float | None = Field(None, gt=0, description="auxiliary-model peak learning rate (Adam, one-cycle); "
                                 "null = the victim's training recipe")
    checkpoint: Literal["last", "benign_val"] = Field(
        "last", description="which MAE epoch to keep: 'last', or 'benign_val' — hold out val_fraction of the "
        "training data and keep the epoch whose unmasked reconstruction error (the scoring setting) on it is "
        "lowest; a benign-only rule, no attack data involved")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="checkpoint 'benign_val': share of the training "
                                "data held out from MAE training to choose the epoch")
    score_batch_size: int = Field(512, gt=0, description="queries per forward pass when scoring (memory only; "
                                  "does not change scores)")
    cache: bool = Field(True, description="cache the trained MAE + auxiliary model (shared by same, same_x, same_y)")

    @model_validator(mode="after")
    def _heads_divide_widths(self) -> "SameModelParams":
        if self.embed_dim % self.num_heads:
            raise ValueError(f"The 'num_heads' parameter of SAME must divide embed_dim ({self.embed_dim}). "
                             f"Got {self.num_heads} instead.")
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(f"The 'decoder_num_heads' parameter of SAME must divide decoder_embed_dim "
                             f"({self.decoder_embed_dim}). Got {self.decoder_num_heads} instead.")
        if self.pos_embed == "sincos" and (self.embed_dim % 4 or self.decoder_embed_dim % 4):
            raise ValueError("pos_embed 'sincos' needs embed_dim and decoder_embed_dim divisible by 4. "
                             f"Got {self.embed_dim} and {self.decoder_embed_dim} instead.")
        return self

    def model_key(self) -> dict[str, Any]:
        """The fields that change the trained models (not how scores are batched or whether to cache)."""
        dumped = self.model_dump(mode="json")
        skip = {"score_batch_size", "cache"}
        if self.checkpoint == "last":  # keys from before checkpoint selection existed stay valid
            skip |= {"checkpoint", "val_fraction"}
        return {k: dumped[k] for k in SameModelParams.model_fields if k not in skip}


class SameParams(SameModelParams):
    """Params of the combined SAME score."""

    alpha: float = Field(0.99, ge=0.0, le=1.0, description="weight of the reconstruction term: "
                         "score = alpha * s1 + (1 - alpha) * s2 (the authors' evaluation script: 0.99)")
    standardize: bool = Field(False, description="z-score each term on benign data (the benign calibration split, "
                              "else the training data) before combining, so that alpha weighs comparable scales")


detectors.declare(
    "same", "stealcheck.detectors.same:SameDetector",
    params=SameParams,
    needs_network=True,
    summary=("SAME: masked-autoencoder reconstruction error plus victim-vs-auxiliary deviation (Xie et al., AAAI "
             "2024)."))

detectors.declare(
    "same_x", "stealcheck.detectors.same:SameXDetector",
    params=SameModelParams,
    needs_network=True,
    summary="SAME-X: SAME's reconstruction term only (per-sample MSE of the unmasked MAE reconstruction).")

detectors.declare(
    "same_y", "stealcheck.detectors.same:SameYDetector",
    params=SameModelParams,
    needs_network=True,
    summary="SAME-Y: SAME's deviation term only (KL of the victim on x against the auxiliary model on x_hat).")


# ---------------------------------------------------------------- fusion


SIGNALS = ("pixel_density", "intensity_knn", "energy", "msp", "feature_knn", "feature_mahalanobis",
           "reconstruction", "masked_reconstruction", "deviation")


MAE_SIGNALS = ("reconstruction", "masked_reconstruction", "deviation")


FEATURE_SIGNALS = ("feature_knn", "feature_mahalanobis")


DEFAULT_SIGNALS = ("pixel_density", "intensity_knn", "energy", "feature_knn")


class FusionParams(BaseModel):
    model_config = PARAMS_CONFIG

    signals: list[Literal[SIGNALS]] | None = Field(  # type: ignore[valid-type]
        None, description="signals to combine, from " + ", ".join(SIGNALS) + "; null = pixel_density, "
        "intensity_knn, energy and feature_knn, each where the victim allows it (intensity_knn for image inputs, "
        "energy needs logits, feature_knn the victim network; msp replaces energy without logits)")
    rule: Literal["max", "sum", "mahalanobis"] = Field(
        "max", description="how standardised signals combine: 'max' (monotone), 'sum' (monotone) or "
        "'mahalanobis' (distance from the benign mean in signal space, two-sided)")
    target_fpr: float = Field(0.05, gt=0.0, lt=1.0, description="benign false-positive rate the threshold is set "
                              "for (the detector's own flag), measured on the part of the benign calibration split "
                              "that standardize_fraction leaves")
    standardize_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="share of the benign calibration data "
                                        "used to standardise the signals; the rest sets the threshold")
    pixel_bins: int = Field(16, ge=2, le=256, description="pixel_density / intensity_knn: histogram bins over "
                            "the input range")
    pixel_atoms: bool = Field(True, description="pixel_density / intensity_knn: the input range's two ends are "
                              "cells of their own beside the bins, so a feature that benign data hold exactly at "
                              "an end (a digit's black background, a saturated pixel) makes any move away from it "
                              "rare however small; false = bins only")
    knn_k: int | None = Field(None, gt=0, description="feature_knn / intensity_knn: distance to the k-th nearest "
                              "training sample; "
                              "null = one per 1,000 bank samples (at least 1), Sun et al.'s ratio (k = 50 for "
                              "CIFAR-10's 50,000)")
    bank_size: int = Field(5000, gt=0, description="feature_knn / feature_mahalanobis / intensity_knn: training "
                           "samples kept "
                           "(seeded subsample when the training set is larger)")
    feature_dims: int | None = Field(None, gt=0, description="feature_knn / feature_mahalanobis: project the "
                                     "penultimate features onto their top singular directions on the bank (benign "
                                     "training data) first, keeping this many; null = all (also when it is not "
                                     "below the features' width; at most the bank's size are kept). The bank's size "
                                     "times this is what kNN reads per query, so it sets the single-query cost")
    masked_draws: int = Field(4, gt=0, description="masked_reconstruction: random masks averaged per query")
    masked_ratio: float = Field(0.5, gt=0.0, lt=1.0, description="masked_reconstruction: share of patches masked")
    mae: SameModelParams = Field(default_factory=lambda: SameModelParams(patch_size=7),
                                 description="the MAE (and auxiliary model) behind the reconstruction signals; "
                                 "same keys as the 'same' detector's model params (default: patch 7, the cheaper "
                                 "scoring path)")
    score_batch_size: int = Field(512, gt=0, description="queries per forward pass when scoring (memory only)")

    @field_validator("signals")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("The 'signals' parameter of fusion needs at least one signal (or null for the "
                                 "defaults).")
            dup = sorted({s for s in v if v.count(s) > 1})
            if dup:
                raise ValueError(f"The 'signals' parameter of fusion lists {dup} more than once.")
        return v


detectors.declare(
    "fusion", "stealcheck.detectors.fusion:FusionDetector",
    params=FusionParams,
    summary=("Signal fusion: pixel density, intensity mix, victim energy / max-softmax, penultimate-feature kNN or "
             "Mahalanobis distance and SAME's reconstruction terms, each z-scored on benign data and combined by a "
             "benign-only rule (max of z-scores by default), with a threshold for a target benign "
             "false-positive rate."))
