"""Every built-in attack's parameters and capabilities, declared without importing torch or ART.

``stealcheck validate`` and ``stealcheck list`` read this module only; an attack's implementation
(the module named in its ``declare`` call) is imported when a run first needs it.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from stealcheck.datasets import Dataset
from stealcheck.registry import FloatPair, PARAMS_CONFIG, attacks


# ---------------------------------------------------------------- art_extraction


class KnockoffParams(BaseModel):
    model_config = PARAMS_CONFIG
    strategy: Literal["random", "adaptive"] = Field("random", description="random sampling of the pool, or the "
                                                     "adaptive gradient bandit over the pool's labels")
    reward: Literal["cert", "div", "loss", "all"] = Field("all", description="adaptive reward")
    use_probability: bool = Field(True, description="train on the served probabilities (false: on top-1 labels)")
    batch_size_query: int = Field(256, gt=0, description="inputs per query batch sent to the victim")
    pool_data: str | None = Field(None, description="data set (a role under data:) to draw the proxy pool from "
                                  "instead of data.attacker — e.g. letters, to measure proxy sensitivity")
    avoid_detector: str | None = Field(None, description="adaptive attacker: id of a declared detector whose "
                                       "scores the attacker knows (worst case for the defender); the pool is cut "
                                       "to the keep_fraction it scores lowest before sampling")
    keep_fraction: float = Field(1.0, gt=0.0, le=1.0, description="adaptive attacker: share of the pool kept "
                                 "(the stealth knob: smaller = stealthier, fewer distinct proxy images)")

    @model_validator(mode="after")
    def _stealth(self) -> "KnockoffParams":
        if self.keep_fraction < 1.0 and self.avoid_detector is None:
            raise ValueError("The 'keep_fraction' parameter of knockoff filters the pool by a detector's scores: "
                             "set avoid_detector to a declared detector id as well.")
        if self.avoid_detector is not None and self.strategy != "random":
            raise ValueError("avoid_detector (the adaptive attacker) works with strategy 'random' only.")
        return self


def knockoff_pool_size(p: KnockoffParams, pool: Dataset | None, load_data) -> int | None:
    """Distinct samples the knockoff attack can query, before running it (for the detection budgets)."""
    base = _base_pool(p, pool, load_data)
    return None if base is None else int(np.ceil(p.keep_fraction * len(base)))


def _base_pool(p: KnockoffParams, pool: Dataset | None, load_data) -> Dataset | None:
    """data.attacker, or the data set ``pool_data`` names."""
    if p.pool_data is None:
        return pool
    if load_data is None:
        raise ValueError(f"knockoff: pool_data '{p.pool_data}' needs the scenario's data sets")
    return load_data(p.pool_data)


class CopycatParams(BaseModel):
    model_config = PARAMS_CONFIG
    use_probability: bool = Field(False, description="train on probabilities instead of the paper's hard labels")
    batch_size_query: int = Field(256, gt=0, description="inputs per query batch sent to the victim")


attacks.declare(
    "knockoff", "stealcheck.attacks.art_extraction:KnockoffAttack",
    params=KnockoffParams,
    needs_output=lambda p: "probabilities" if p.use_probability else None,
    needs_labels=lambda p: p.strategy == "adaptive" and p.pool_data is None,
    uses_pool=lambda p: p.pool_data is None,
    data_roles=lambda p: [p.pool_data] if p.pool_data else [],
    detector_refs=lambda p: [p.avoid_detector] if p.avoid_detector else [],
    pool_size=knockoff_pool_size,
    summary="KnockoffNets (Orekondy et al. 2019) from ART: query a natural proxy pool, train on the answers.")

attacks.declare(
    "copycat", "stealcheck.attacks.art_extraction:CopycatAttack",
    params=CopycatParams,
    needs_output=lambda p: "probabilities" if p.use_probability else None,
    summary=("CopycatCNN (Correia-Silva et al. 2018) from ART: label non-problem-domain images with the victim's top "
             "class."))


# ---------------------------------------------------------------- active_thief


class ActiveThiefParams(BaseModel):
    """ActiveThief's knobs. Defaults from single-seed prototypes against the conv3 MNIST victim (digits pool,
    thief 50 epochs in [300, 1500] steps, fidelity at 250 / 500 / 1,000 / 1,500 queries): uncertainty with
    rounds of 100 from 100 seeds 0.789 / 0.845 / 0.877 / 0.890 (265 s), with rounds of 250 from 250 seeds
    0.737 / 0.858 / 0.885 / 0.872 (55 s); k-center (250/250) 0.737 / 0.789 / 0.869 / 0.901; DFAL (250/250, all ten
    classes, 20 DeepFool steps) 0.737 / 0.817 / 0.880 / 0.906 but ~60 s of DeepFool per round; random KnockoffNets
    0.761 / 0.842 / 0.862 / 0.864. A small seed set buys the first budget; long rounds keep the cost down."""

    model_config = PARAMS_CONFIG
    strategy: Literal["uncertainty", "kcenter", "dfal", "random"] = Field(
        "uncertainty", description="how each round picks the pool samples to query: uncertainty (entropy of the "
        "thief's answer), kcenter (greedy k-center on the thief's penultimate features), dfal (smallest DeepFool "
        "perturbation), random (the baseline)")
    seed_size: int = Field(100, gt=0, description="random samples queried before the first round")
    round_size: int = Field(250, gt=0, description="queries per round (the thief is trained after each round and "
                            "at every budget)")
    candidates: int | None = Field(None, gt=0, description="score only this many random unqueried samples per round "
                                   "(null = all, except dfal: 500, which bounds DeepFool's cost)")
    deepfool_max_iter: int = Field(10, gt=0, description="dfal: DeepFool iterations per candidate")
    from_scratch: bool = Field(True, description="train the thief from its initial weights at every round, as the "
                               "paper does (false: keep training it; thief.warm_start does not apply)")
    use_probability: bool = Field(True, description="train on the served probabilities (false: on top-1 labels)")
    batch_size_query: int = Field(256, gt=0, description="inputs per query batch sent to the victim")


attacks.declare(
    "activethief", "stealcheck.attacks.active_thief:ActiveThiefAttack",
    params=ActiveThiefParams,
    needs_output=lambda p: "probabilities" if p.use_probability else None,
    summary=("ActiveThief (Pal et al. 2020): rounds of train, score the unqueried pool (uncertainty, k-center, DFAL or "
             "random), query the best batch."))


# ---------------------------------------------------------------- jbda


class JBDAParams(BaseModel):
    model_config = PARAMS_CONFIG
    variant: Literal["jbda", "jb-self", "jb-topk"] = Field("jbda", description="augmentation rule (PRADA's names)")
    seed_size: int = Field(150, gt=0, description="seed inputs drawn from seed_data (Papernot: 150; SAME: 200)")
    seed_data: str = Field("attacker", description="data set (a role under data:) the seeds are drawn from; "
                           "JBDA assumes a few in-distribution samples")
    nb_rounds: int | None = Field(None, gt=0, description="augmentation rounds; null = as many as the budget allows")
    step_size: float = Field(0.1, gt=0, description="lambda, the step of each augmentation")
    nb_epochs: int = Field(10, gt=0, description="substitute epochs per round (clipped to the thief's step range)")
    sign_period: int | None = Field(None, gt=0, description="flip the step's sign every tau rounds; null = never")
    reservoir_size: int | None = Field(None, gt=0, description="kappa: augment only this many random points per "
                                       "round once reservoir_after rounds are done; null = all")
    reservoir_after: int = Field(3, ge=0, description="sigma: rounds before the reservoir applies")
    top_k: int = Field(3, gt=0, description="jb-topk: targets among the substitute's top-k other classes")
    topk_steps: int = Field(5, gt=0, description="jb-topk: gradient steps towards the target")
    use_probability: bool = Field(False, description="train on the served probabilities (Papernot: labels)")
    batch_size_query: int = Field(256, gt=0, description="inputs per query batch sent to the victim")
    keep_saturated: bool = Field(False, description="adaptive attacker: leave features at an end of the input "
                                 "range (a digit's black background) where they are; only the others move")


attacks.declare(
    "jbda", "stealcheck.attacks.jbda:JBDAAttack",
    params=JBDAParams,
    uses_pool=False,
    data_roles=lambda p: [p.seed_data],
    needs_output=lambda p: "probabilities" if p.use_probability else None,
    summary="Jacobian-based dataset augmentation (Papernot et al. 2017) with PRADA's jb-self and jb-topk variants.")


# ---------------------------------------------------------------- data_free


class DFMEParams(BaseModel):
    model_config = PARAMS_CONFIG
    batch_size: int = Field(256, ge=2, description="generator batch size (reference 256)")
    nz: int = Field(256, gt=0, description="dimension of the generator's latent vector")
    generator_width: int = Field(64, gt=0, description="generator channels (last hidden conv; the first has twice "
                                 "that); lower it to run faster on a CPU")
    n_generator_steps: int = Field(1, ge=0, description="generator steps per iteration")
    n_student_steps: int = Field(5, gt=0, description="student steps per iteration, each on a fresh batch")
    lr_student: float = Field(0.1, gt=0, description="SGD learning rate of the student")
    lr_generator: float = Field(1e-4, gt=0, description="Adam learning rate of the generator")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the student")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay of the student")
    nb_directions: int = Field(1, gt=0, description="random directions per sample of the zeroth-order gradient "
                               "estimate (each costs one query)")
    epsilon: float = Field(1e-3, gt=0, description="forward-difference step of the gradient estimate")
    lr_milestones: list[float] = Field([0.1, 0.3, 0.5], description="fractions of the largest budget after which "
                                       "both learning rates are multiplied by lr_gamma")
    lr_gamma: float = Field(0.3, gt=0, le=1, description="learning-rate factor at each milestone")
    stealth_weight: float = Field(0.0, ge=0, description="adaptive attacker: weight of a penalty on generated "
                                  "queries that look atypical to a per-pixel Gaussian fitted on stealth_data (the "
                                  "attacker's own estimate of a detector); 0 = the plain attack")
    stealth_data: str | None = Field(None, description="data set (a role under data:) the attacker fits that "
                                     "estimate on, e.g. attacker; required when stealth_weight > 0")
    stealth_pretrain_steps: int = Field(0, ge=0, description="query-free generator steps on the penalty alone "
                                        "before the first query (with stealth_weight > 0)")

    @field_validator("lr_milestones")
    @classmethod
    def _milestones(cls, value: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in value) or any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"must be strictly increasing fractions in (0, 1); got {value}")
        return value

    @model_validator(mode="after")
    def _stealth(self) -> "DFMEParams":
        if self.stealth_weight > 0 and self.stealth_data is None:
            raise ValueError("The 'stealth_weight' parameter needs stealth_data: the data set the attacker estimates "
                             "the detector from (e.g. attacker).")
        return self


class MAZEParams(DFMEParams):
    model_config = PARAMS_CONFIG
    nb_directions: int = Field(10, gt=0, description="random directions per sample of the zeroth-order gradient "
                               "estimate (each costs one query)")
    replay_capacity: int = Field(20_000, ge=0, description="queries kept (reservoir sample) for experience replay")
    n_replay_steps: int = Field(20, ge=0, description="student steps on replayed queries per iteration (no queries)")


attacks.declare(
    "dfme", "stealcheck.attacks.data_free:DFMEAttack",
    params=DFMEParams,
    uses_pool=False,
    needs_output=lambda p: "probabilities",
    data_roles=lambda p: [p.stealth_data] if p.stealth_data else [],
    summary=("DFME (Truong et al. 2021): data-free extraction with a generator and zeroth-order gradients; no pool "
             "needed."))

attacks.declare(
    "maze", "stealcheck.attacks.data_free:MAZEAttack",
    params=MAZEParams,
    uses_pool=False,
    needs_output=lambda p: "probabilities",
    data_roles=lambda p: [p.stealth_data] if p.stealth_data else [],
    summary="MAZE (Kariyappa et al. 2021): DFME-style data-free extraction with KL loss, 10 directions and replay.")


# ---------------------------------------------------------------- tramer


def check_feature_box(box: Sequence[Sequence[float]] | None, victim) -> str | None:
    """Validation (``stealcheck validate``): the box must have 1 or d pairs inside the victim's input range."""
    if box is None:
        return None
    spec = getattr(victim.params, "input", None)
    if spec is None:
        return None
    d = int(np.prod(spec.shape))
    lo, hi = spec.range
    if len(box) not in (1, d):
        return (f"feature_box has {len(box)} [low, high] pairs but the victim's input has {d} features "
                f"(shape {list(spec.shape)}); give one pair for every feature, or exactly {d}.")
    for j, (a, b) in enumerate(box):
        if not a < b:
            return f"feature_box[{j}] = [{a}, {b}] needs low < high."
        if a < lo or b > hi:
            return (f"feature_box[{j}] = [{a}, {b}] lies outside the victim's input range [{lo}, {hi}], which the "
                    "data are scaled to; queries there are not valid inputs.")
    return None


FeatureBoxField = Field(None, description="region queries are drawn from: null = the victim's input range; one "
                        "[low, high] pair for every feature; or one pair per feature")


class EquationSolvingParams(BaseModel):
    model_config = PARAMS_CONFIG
    model: Literal["binary_lr", "softmax", "ovr", "mlp"] = Field(
        "softmax", description="the victim's model family, which the attacker knows: binary_lr (solved exactly), "
        "softmax or ovr logistic regression, or a one-hidden-layer mlp")
    hidden: int = Field(20, gt=0, description="mlp: hidden units (the victim's)")
    activation: Literal["relu", "tanh", "logistic"] = Field("relu", description="mlp: hidden activation (the victim's)")
    l2: float = Field(1e-8, ge=0, description="L2 penalty on the weights of the fitted model (tiny: makes the "
                      "loss strongly convex without biasing the solution)")
    max_iter: int = Field(5000, gt=0, description="L-BFGS-B iterations per fit")
    restarts: int = Field(1, gt=0, description="mlp: random restarts, the lowest loss is kept")
    query_design: Literal["uniform", "basis"] = Field(
        "uniform", description="uniform: every query uniform in the box (the paper); basis: first the box's low "
        "corner and one step along each axis (best conditioned for the exact binary solve), then uniform")
    feature_box: list[FloatPair] | None = FeatureBoxField


class LowdMeekParams(BaseModel):
    model_config = PARAMS_CONFIG
    eps: float = Field(1e-6, gt=0, lt=0.5, description="binary-search precision along each witness segment "
                       "(log2(1/eps) queries per boundary point)")
    nb_boundary: int | None = Field(None, gt=0, description="boundary points to find; null = d + 1 (more: least squares)")
    feature_box: list[FloatPair] | None = FeatureBoxField


class RetrainingParams(BaseModel):
    model_config = PARAMS_CONFIG
    strategy: Literal["uniform", "line_search", "adaptive"] = Field(
        "adaptive", description="where queries go: uniform in the box, line searches between differently "
        "labelled points, or adaptive rounds where the copy is least certain")
    model: Literal["binary_lr", "softmax", "ovr", "mlp"] = Field("softmax", description="family of the copy")
    hidden: int = Field(20, gt=0, description="mlp: hidden units")
    activation: Literal["relu", "tanh", "logistic"] = Field("relu", description="mlp: hidden activation")
    l2: float = Field(1e-4, ge=0, description="L2 penalty on the copy's weights (keeps label-only fits finite)")
    max_iter: int = Field(1000, gt=0, description="L-BFGS-B iterations per refit")
    use_probability: bool = Field(True, description="fit the served probabilities; false = the top-1 labels only")
    uniform_share: float = Field(0.25, ge=0, le=1, description="share of uniform queries (line_search: of the "
                                 "budget; adaptive: of each round after the first)")
    round_size: int = Field(100, gt=0, description="adaptive: queries per round (refit after each)")
    candidates: int = Field(10, gt=0, description="adaptive: unsent uniform candidates per chosen query")
    search_steps: int = Field(8, gt=0, description="line_search: binary-search steps per pair")
    feature_box: list[FloatPair] | None = FeatureBoxField


attacks.declare(
    "equation_solving", "stealcheck.attacks.tramer:EquationSolvingAttack",
    params=EquationSolvingParams,
    holds_all_queries=True,
    uses_pool=False,
    needs_output=lambda p: "probabilities",
    check_victim=lambda p, victim: check_feature_box(p.feature_box, victim),
    summary=("Tramèr et al.'s equation solving: exact binary LR from d+1 queries; softmax/OvR LR and MLP by cross- "
             "entropy fit."))

attacks.declare(
    "lowd_meek", "stealcheck.attacks.tramer:LowdMeekAttack",
    params=LowdMeekParams,
    uses_pool=False,
    needs_output=lambda p: None,
    check_victim=lambda p, victim: check_feature_box(p.feature_box, victim),
    summary="Lowd-Meek label-only attack on binary linear classifiers: sign witnesses and boundary binary searches.")

attacks.declare(
    "retraining", "stealcheck.attacks.tramer:RetrainingAttack",
    params=RetrainingParams,
    holds_all_queries=True,
    uses_pool=False,
    needs_output=lambda p: "probabilities" if p.use_probability else None,
    check_victim=lambda p, victim: check_feature_box(p.feature_box, victim),
    summary="Tramèr et al.'s retraining (uniform, line-search, adaptive) on probabilities or labels, for any victim.")


# ---------------------------------------------------------------- tramer_trees


class PathFindingParams(BaseModel):
    model_config = PARAMS_CONFIG
    variant: Literal["path", "top_down"] = Field(
        "path", description="path: complete queries only; top_down: incomplete queries (missing features), as "
        "BigML accepted")
    eps: float = Field(1e-4, gt=0, lt=1, description="precision of each threshold (bisection stops at this width)")
    feature_box: list[FloatPair] | None = FeatureBoxField


attacks.declare(
    "path_finding", "stealcheck.attacks.tramer_trees:PathFindingAttack",
    params=PathFindingParams,
    uses_pool=False,
    needs_output=lambda p: "leaf",
    check_victim=lambda p, victim: check_feature_box(p.feature_box, victim),
    summary="Tramèr et al.'s decision-tree path finding against a leaf-id API (output: leaf), complete or top-down.")
