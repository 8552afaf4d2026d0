"""Scenario schema: pydantic models, plugin references, and loading with precise errors.

A scenario is validated completely before any data is loaded or any model is trained:
every key is checked (``extra="forbid"``), every plugin name resolves in its registry,
every plugin's parameters are valid, and cross-checks (output mode vs attacks, pool size
vs budgets) run in :func:`check_scenario`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, Strict as StrictType, TypeAdapter, ValidationError, field_validator, model_validator

from . import registry
from .registry import PARAMS_CONFIG, FloatPair
from .errors import ScenarioError, did_you_mean, short_repr
from .yamlio import load_yaml

OUTPUT_MODES = ("probabilities", "top_k", "label", "leaf")  # leaf: tree victims, node id + probabilities


#: Seeds are numpy seeds: non-negative and below 2**32.
Seed = Annotated[int, Field(ge=0, lt=2**32)]
#: A query budget: at least one query, at most a billion (the oracle's counters and the attacks'
#: query buffers are sized from it; the memory a budget needs is checked against the machine too).
MAX_BUDGET = 10**9
Budget = Annotated[int, StrictType(), Field(gt=0, le=MAX_BUDGET)]
BUDGET_LIST = TypeAdapter(list[Budget])
#: Input shapes stealcheck can hold: a dimension of at most 65,536 and 100 million values.
MAX_INPUT_DIM, MAX_INPUT_SIZE = 65_536, 100_000_000


class Strict(BaseModel):
    """Base of every scenario model: unknown keys are errors."""

    model_config = PARAMS_CONFIG


@dataclass(frozen=True)
class PluginRef:
    """A resolved reference to a plugin: display id, plugin name and validated params."""

    id: str
    plugin: str
    params: Any  # the plugin's params model instance
    raw: dict
    budgets: tuple[int, ...] | None = None  # an attack's own checkpoints (long form); None = the scenario's

    def to_dict(self) -> dict:
        out = {"id": self.id, "plugin": self.plugin, "params": self.params.model_dump(mode="json")}
        if self.budgets is not None:
            out["budgets"] = list(self.budgets)
        return out


def split_plugin_item(item: Any, section: str, extra_keys: tuple[str, ...] = ()) -> tuple[str | None, str, dict]:
    """Normalise the accepted spellings of a plugin item into (explicit id, plugin, params).

    Accepted: ``name``; ``{name: {params}}``; ``{name: null}``;
    ``{plugin: name, id: label, params: {...}}`` (long form, which may also hold ``extra_keys``).
    Only null and a mapping mean parameters: ``{rounded: 0}`` or ``params: ""`` is an error, not
    the defaults. Names and ids must be strings, since ids are compared, sorted and printed.
    """

    def _params_mapping(params: Any, path: str, what: str, example: str = "") -> dict:
        if params is None:
            return {}
        if not isinstance(params, dict):
            raise ScenarioError(f"{what} must be a mapping{example}, got {short_repr(params)}.", path=path)
        return params

    if isinstance(item, str):
        return None, item, {}
    if isinstance(item, dict):
        if "plugin" in item:
            allowed = ("plugin", "id", "params") + tuple(extra_keys)
            unknown = [k for k in item if k not in allowed]
            if unknown:
                key = str(unknown[0])
                raise ScenarioError(
                    f"unknown key '{key}' in the long form.{did_you_mean(key, allowed)} Allowed: {', '.join(allowed)}.",
                    path=section,
                )
            for key in ("plugin", "id"):
                if key in item and not isinstance(item[key], str) and not (key == "id" and item[key] is None):
                    raise ScenarioError(f"'{key}' must be a name (a string), got {short_repr(item[key])}.",
                                        path=f"{section}.{key}")
            params = _params_mapping(item.get("params"), f"{section}.params", "'params'")
            return item.get("id"), item["plugin"], params
        if len(item) == 1:
            (name, params), = item.items()
            if not isinstance(name, str):
                raise ScenarioError(f"a plugin name must be a string, got {short_repr(name)}.", path=section)
            example = f" (e.g. {{{name}: {{key: value}}}}, or {{{name}: null}} for the defaults)"
            return None, name, _params_mapping(params, section, f"the parameters of '{name}'", example)
    raise ScenarioError(
        "expected a plugin name, a one-key mapping {name: {params}}, or {plugin: name, id: ..., params: {...}}; "
        f"got {short_repr(item)}.",
        path=section,
    )


def _auto_id(plugin: str, raw_params: dict) -> str:
    if not raw_params:
        return plugin
    parts = ",".join(f"{k}={v}" for k, v in raw_params.items())
    return f"{plugin}:{parts}"


def resolve_plugin(reg: registry.Registry, item: Any, path: str) -> PluginRef:
    """Resolve one plugin item against ``reg``, validating its params (and an attack's own budgets)."""
    is_attack = reg is registry.attacks
    explicit_id, name, raw = split_plugin_item(item, path, extra_keys=("budgets",) if is_attack else ())
    try:
        info = reg.get(name)
    except ScenarioError as exc:
        raise ScenarioError(exc.message, path=path) from None
    params = validate_model(info.params, raw, path, what=f"{reg.singular} '{name}'")
    budgets = None
    if is_attack and isinstance(item, dict) and item.get("budgets") is not None:
        try:
            budgets = tuple(ScenarioModel._budgets(BUDGET_LIST.validate_python(item["budgets"])))
        except ValidationError as exc:
            raise pydantic_to_scenario_error(exc, None, f"{path}.budgets") from None
        except ValueError as exc:
            raise ScenarioError(f"{exc}; budgets must be a list of positive, distinct integers.",
                                path=f"{path}.budgets") from None
    return PluginRef(explicit_id or _auto_id(name, raw), name, params, raw, budgets)


def validate_model(model: type[BaseModel], raw: dict, path: str, what: str = "") -> BaseModel:
    """Validate ``raw`` with ``model``; turn the first pydantic error into a ScenarioError."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_to_scenario_error(exc, model, path, what) from None


def pydantic_to_scenario_error(exc: ValidationError, model: type[BaseModel] | None, prefix: str, what: str = "") -> ScenarioError:
    """Build a readable message (key path, allowed values, given value) from pydantic's errors.

    The first problem leads, with its key path; up to two more follow, each with its own path.
    """
    messages = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        given = err.get("input")
        etype = err["type"]
        # A key that is not a string, e.g. YAML's `5:` where a name belongs: a model's loc ends at
        # the key (invalid_key), a dict[str, ...]'s at '[key]'.
        if etype == "invalid_key" or (loc and loc[-1] == "[key]"):
            loc = loc[:-1] if loc and loc[-1] == "[key]" else loc
            shown = "null" if given is None else f"{short_repr(given)} ({type(given).__name__})"
            msg = (f"the key {shown} must be a name (a string){(' for ' + what) if what else ''}; "
                   "quote it if it is meant as text.")
        elif etype == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1])
            key = loc[-1] if loc else "?"
            hint = did_you_mean(key, allowed) if allowed else ""
            msg = f"unknown key '{key}'{(' for ' + what) if what else ''}.{hint}"
            if allowed:
                msg += f" Allowed keys: {', '.join(sorted(allowed))}."
        elif etype == "missing":
            msg = f"missing required key '{loc[-1]}'{(' for ' + what) if what else ''}."
        else:
            text = err["msg"]
            for lead in ("Value error, ", "Assertion failed, "):
                text = text.removeprefix(lead)
            msg = text if "got" in text else f"{text}; got {short_repr(given)}"
            msg = msg.rstrip(".") + "."
            if etype == "literal_error":
                options = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
                msg += did_you_mean(str(given), options)
            if what:
                msg = f"invalid value for {what}: " + msg
        messages.append((".".join([prefix] + loc if prefix else loc), msg))
    path, msg = messages[0]
    if len(messages) > 1:
        more = "; ".join(f"{p}: {m.rstrip('.')}" for p, m in messages[1:3])
        msg += f" (and {len(messages) - 1} more problem(s): {more})"
    return ScenarioError(msg, path=path)


def _allowed_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``, best effort."""
    current: Any = model
    for part in loc:
        if current is None or isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        ann = fields[part].annotation
        current = _first_model(ann)
    if current is None or not hasattr(current, "model_fields"):
        return []
    return list(current.model_fields)


def _first_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------- scenario sections


class InputSpec(Strict):
    """What the model takes: shape (C,H,W for images, (d,) for tabular), value range, normalisation."""

    shape: list[int] = Field(default_factory=lambda: [1, 28, 28], min_length=1, max_length=4,
                             description="input shape without batch axis")
    range: FloatPair = Field((0.0, 1.0), description="valid input value range (clip values)")
    mean: list[float] | None = Field(None, description="per-channel mean subtracted inside the model")
    std: list[float] | None = Field(None, description="per-channel std divided inside the model")

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, v: list[int]) -> list[int]:
        if any(d <= 0 for d in v):
            raise ValueError(f"every dimension must be a positive integer, got {v}")
        if any(d > MAX_INPUT_DIM for d in v) or math.prod(v) > MAX_INPUT_SIZE:
            raise ValueError(f"an input of shape {v} is larger than stealcheck handles (at most {MAX_INPUT_DIM:,} "
                             f"per dimension and {MAX_INPUT_SIZE:,} values in all)")
        return v

    @model_validator(mode="after")
    def _check_range(self) -> "InputSpec":
        if self.range[0] >= self.range[1]:
            raise ValueError(f"range must be [low, high] with low < high, got {list(self.range)}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"every std must be positive, got {self.std}")
        channels = self.shape[0]
        for key, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, channels):
                raise ValueError(f"{key} needs one value per channel ({channels}, the first entry of shape) or "
                                 f"a single value; got {len(values)}")
        return self


class UnlabelledSpec(Strict):
    """Label-free training of the thief on the pool samples its attack did not query (never a query)."""

    method: Literal["pseudo_label", "consistency", "mixup"] = Field(
        "pseudo_label", description="pseudo_label: the thief's own confident top-1 on an unqueried sample is its "
        "target under augmentation; consistency: the thief's answers on two perturbed views agree; mixup: queried "
        "samples mixed with unqueried ones, the targets mixed alike (the thief's sharpened guess for the unqueried)")
    weight: float = Field(1.0, ge=0, description="weight of the label-free loss beside the queried samples' loss")
    threshold: float = Field(0.95, ge=0, lt=1, description="pseudo_label: least thief confidence for a pseudo-label")
    temperature: float = Field(0.5, gt=0, le=1, description="mixup: sharpening temperature of the thief's guess")
    alpha: float = Field(0.75, gt=0, description="mixup: the mixing weight is drawn from Beta(alpha, alpha)")


class ThiefSpec(Strict):
    """The attacker's substitute model and its training recipe."""

    architecture: str | None = Field(None, description="network of the thief; null = the victim's architecture "
                                     "(an MLP for scikit-learn victims)")
    arch_params: dict[str, Any] | None = Field(None, description="architecture parameters; null = the victim's")
    # Defaults measured with benchmarks/attacks_mnist.py (conv3 MNIST victim, digits proxy): 20 epochs within
    # [60, 300] steps copied it at 0.855 fidelity with 1,500 queries; 50 epochs up to 1,500 steps at 0.86-0.89
    # (0.81-0.84 at 500) for ~4x the training time; 3,000 steps bought nothing more at 1,500 queries.
    epochs: int = Field(50, gt=0, description="passes over the stolen set per checkpoint (before min/max steps)")
    min_steps: int = Field(60, gt=0, description="at least this many optimiser steps per checkpoint")
    max_steps: int = Field(1500, gt=0, description="at most this many optimiser steps per checkpoint")
    batch_size: int = Field(64, gt=0, description="training batch size")
    lr: float = Field(1e-2, gt=0, description="peak learning rate of the one-cycle Adam schedule")
    warm_start: bool = Field(True, description="continue training the previous checkpoint's thief "
                             "(an attacker keeps its model as queries accrue)")
    augment: bool = Field(False, description="train on randomly shifted, turned and scaled copies of the queried "
                          "images, each with its original's answer (no extra query); image victims only")
    unlabelled: UnlabelledSpec | None = Field(None, description="label-free training on the unqueried pool samples "
                                              "(pool attacks: knockoff, copycat, activethief); a method name or "
                                              "{method: ..., weight: ...}; null = off")

    @field_validator("unlabelled", mode="before")
    @classmethod
    def _method_name(cls, v: Any) -> Any:
        return {"method": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _steps(self) -> "ThiefSpec":
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must not exceed max_steps ({self.max_steps})")
        return self


class Gate(Strict):
    """An expectation: the mean over seeds of ``metric`` in every matching cell is within [min, max]."""

    metric: str = Field(description="metric name, e.g. fidelity")
    attack: str | None = Field(None, description="attack id or plugin name; null = every attack")
    defence: str | None = Field(None, description="defence id or plugin name; null = every defence")
    detector: str | None = Field(None, description="detector id or plugin name, for detection metrics "
                                 "(auroc, aupr, fpr_at_95_tpr, ...)")
    scheme: str | None = Field(None, description="ownership scheme id or plugin name, for ownership metrics "
                               "(detected, p_value, ...)")
    budget: int | None = Field(None, description="budget checkpoint (detection gates: detection budget); "
                               "null = the largest")
    min: float | None = Field(None, description="lower bound (inclusive)")
    max: float | None = Field(None, description="upper bound (inclusive)")
    name: str | None = Field(None, description="label shown in the report and junit.xml")

    @model_validator(mode="after")
    def _bounds(self) -> "Gate":
        if self.defence is not None and self.detector is not None:
            raise ValueError("a gate selects a defence or a detector, not both")
        if self.min is None and self.max is None:
            raise ValueError("a gate needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        sel = ", ".join(f"{k}={v}" for k, v in (("attack", self.attack), ("defence", self.defence),
                                                 ("detector", self.detector), ("scheme", self.scheme),
                                                 ("budget", self.budget))
                        if v is not None)
        bounds = " and ".join(b for b in ((f">= {self.min}" if self.min is not None else ""),
                                          (f"<= {self.max}" if self.max is not None else "")) if b)
        return f"{self.metric} [{sel or 'all cells'}] {bounds}"


class OutputSpec(Strict):
    """Where results and caches go."""

    dir: str = Field("runs", description="parent folder of run folders (runs/<name>/<timestamp>/)")
    cache_dir: str | None = Field(None, description="cache of trained victims; null = $STEALCHECK_CACHE_DIR "
                                  "or ~/.cache/stealcheck")
    title: str | None = Field(None, description="report title; null = the scenario name")
    cache_cells: bool = Field(True, description="reuse the results of a cell (defence x attack x seed) computed "
                              "before with exactly the same inputs; --fresh ignores every cache")


class EvaluationSpec(Strict):
    """How thieves are evaluated."""

    uniform_samples: int = Field(1000, ge=0, description="uniform random inputs for R_unif (0 = skip)")
    test_limit: int | None = Field(None, gt=0, description="evaluate on at most this many test samples")


class DetectionSpec(Strict):
    """How detectors are compared: which attack queries, against which benign queries, at what mix."""

    budgets: list[int] = Field(default_factory=lambda: [1000], description="number of each attack's queries "
                               "that are scored (its first N queries); the attack runs undefended to that budget")
    attacks: list[str] | None = Field(None, description="attack ids whose queries are scored; null = every attack")
    benign: str | None = Field(None, description="data set of benign queries (in-distribution, never trained on); "
                               "null = 'benign' when defined, else 'test'")
    calibration_fraction: float = Field(0.5, gt=0, lt=1, description="share of the benign set given to detectors "
                                        "for calibration (standardising, thresholds); the rest is scored")
    benign_limit: int | None = Field(None, gt=0, description="score at most this many benign queries")
    malicious_ratio: float = Field(0.5, gt=0, lt=1, description="share of attack queries in the scored mix "
                                   "(the excess side is subsampled)")
    ratio_sweep: list[float] = Field(default_factory=list, description="more malicious ratios to report "
                                     "AUROC/AUPR at (e.g. [0.01, 0.1, 0.5, 0.9])")
    prada_clients: list[int] = Field(default_factory=lambda: [1, 10], description="per-client detectors: "
                                     "spread each attack's queries over this many client ids")
    outliers: str = Field("outliers", description="data set given to detectors that need an outlier set "
                          "(OE, EDM)")

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        if not v or any(b <= 0 for b in v) or len(set(v)) != len(v):
            raise ValueError(f"budgets must be a non-empty list of positive, distinct integers, got {v}")
        return sorted(v)

    @field_validator("ratio_sweep")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not 0 < r < 1 for r in v):
            raise ValueError(f"every malicious ratio must be in (0, 1), got {v}")
        return v

    @field_validator("prada_clients")
    @classmethod
    def _clients(cls, v: list[int]) -> list[int]:
        if not v or any(n < 1 for n in v):
            raise ValueError(f"client counts must be positive integers, got {v}")
        return v


INDEPENDENT_KINDS = ("other_seed", "other_arch", "proxy")


class FalseClaimSpec(Strict):
    """The malicious accuser of Liu et al. (USENIX Security 2024): transferable adversarial examples with
    chosen labels, crafted on a model of its own, presented as a scheme's evidence."""

    enabled: bool = Field(True, description="measure each scheme's false-claim success rate")
    samples: int = Field(100, ge=10, le=10_000, description="forged evidence samples (adversarial examples)")
    eps: float = Field(0.3, gt=0, description="L-infinity bound of the adversarial perturbation (input units)")
    steps: int = Field(40, gt=0, le=1000, description="PGD iterations (ART ProjectedGradientDescent)")
    accuser_data: str | None = Field(None, description="data set the accuser trains its own model on; "
                                     "null = the attacker's pool")


class OwnershipSpec(Strict):
    """Ownership resolution: schemes verified on every stolen copy, on independent models and on the victim."""

    schemes: list[Any] = Field(description="ownership schemes (stealcheck list ownership), written like attacks")
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level: a suspect is flagged when p < alpha")
    private: str | None = Field(None, description="data set of the victim's private training samples "
                                "(dataset inference, the watermark's fine-tuning); null = victim_train")
    public: str = Field("test", description="data set of samples the victim never trained on")
    independent: list[Literal["other_seed", "other_arch", "proxy"]] = Field(
        default_factory=lambda: list(INDEPENDENT_KINDS), description="independent models the run trains as "
        "suspects (false positives): the same distribution with another seed, another architecture, the "
        "attacker's proxy pool with its true labels")
    independent_data: str | None = Field(None, description="data set the same-distribution independent models "
                                         "train on (ideally disjoint from the victim's); null = the private set")
    other_architecture: str | None = Field(None, description="architecture of the other_arch model; null = mlp "
                                           "(conv3 when the victim is an mlp)")
    budgets: list[int] | None = Field(None, description="checkpoints whose copies are verified; null = all")
    false_claims: FalseClaimSpec = Field(default_factory=FalseClaimSpec)

    @field_validator("schemes")
    @classmethod
    def _some(cls, v: list) -> list:
        if not v:
            raise ValueError("give at least one scheme")
        return v

    @field_validator("independent")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"independent models must be distinct, got {v}")
        return v


class InteractionTolerances(Strict):
    """How far a figure may drop in a pair, against the defence alone, before the pair conflicts
    (fractions: 0.01 = 1 point; epsilon in its own units)."""

    phi_acc: float = Field(0.01, ge=0, le=1, description="accuracy honest users get")
    robust_accuracy: float = Field(0.05, ge=0, le=1, description="PGD robust accuracy (adversarial training)")
    mi_advantage: float = Field(0.05, ge=0, le=1, description="membership-inference advantage (DP-SGD; the "
                                "membership_inference risk)")
    epsilon: float = Field(0.5, ge=0, description="DP-SGD's epsilon (absolute)")
    trigger_accuracy: float = Field(0.05, ge=0, le=1, description="the backdoor watermark's trigger accuracy")
    ownership_confidence: float = Field(0.01, ge=0, le=1, description="1 - p of an ownership scheme's verification")
    copy_fidelity: float = Field(0.05, ge=0, le=1, description="fidelity of the stolen copy (extraction defences; "
                                 "the extraction risk)")
    auroc: float = Field(0.05, ge=0, le=1, description="AUROC of an active defence's detector")


class InteractionTraining(Strict):
    """The one recipe every training-time variant of the victim is trained with (null = the victim's)."""

    steps: int | None = Field(None, gt=0, le=1_000_000, description="optimiser steps (batches)")
    batch_size: int | None = Field(None, gt=0, le=100_000, description="batch size")
    lr: float | None = Field(None, gt=0, le=10, description="learning rate (Adam)")


class InteractionExtraction(Strict):
    """The extraction attack every deployment is attacked with (its copy's fidelity, the copies the
    ownership schemes verify)."""

    attack: str | None = Field(None, description="id of an entry of attacks; null = the first")
    budget: int | None = Field(None, gt=0, description="a checkpoint of that attack; null = its largest")


class InteractionMembership(Strict):
    """Membership inference (ART MembershipInferenceBlackBox) through the deployed API: the other risk."""

    samples: int = Field(400, ge=20, le=100_000, description="members (the victim's training samples) and "
                         "non-members (the public set) each; half fit the attack model, half measure it")
    attack_model: Literal["rf", "gb", "nn"] = Field("rf", description="ART's attack model type")


class InteractionRobustness(Strict):
    """Robust accuracy under ART's ProjectedGradientDescent (L-infinity, white-box on the deployed network)."""

    eps: float = Field(0.1, gt=0, description="L-infinity bound (input units)")
    eps_step: float = Field(0.02, gt=0, description="step size")
    max_iter: int = Field(10, ge=1, le=1000, description="iterations")
    samples: int = Field(200, ge=10, le=100_000, description="test samples attacked")


class InteractionsSpec(Strict):
    """Unintended interactions: every defence alone and every pair of them, measured against each alone."""

    defences: list[Any] = Field(description="members: training-time defences (stealcheck list training), "
                                "serving-time defences (output perturbations), ownership schemes")
    pairs: list[list[str]] | None = Field(None, description="pairs of member ids to deploy; null = every pair "
                                          "that can be deployed together")
    risks: list[Literal["membership_inference", "evasion", "extraction"]] = Field(
        default_factory=lambda: ["membership_inference", "evasion", "extraction"],
        description="other-risk columns, each deployment against no defence")
    tolerances: InteractionTolerances = Field(default_factory=InteractionTolerances)
    train: InteractionTraining = Field(default_factory=InteractionTraining)
    extraction: InteractionExtraction = Field(default_factory=InteractionExtraction)
    membership: InteractionMembership = Field(default_factory=InteractionMembership)
    robustness: InteractionRobustness = Field(default_factory=InteractionRobustness)
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level of the ownership schemes")
    accuracy_reference: Literal["better", "costlier"] = Field(
        "better", description="phi_ACC of a pair is judged against the better of its members alone (the talk's rule: "
        "a member that costs accuracy alone conflicts with every other) or against the costlier one (only what the "
        "combination costs beyond its members' own costs)")
    private: str = Field("victim_train", description="data set the variants train on (the members of membership "
                         "inference, dataset inference's private samples)")
    public: str = Field("test", description="data set never trained on (non-members, DI's public samples)")
    test_samples: int | None = Field(None, gt=0, description="evaluate accuracy on at most this many test samples")

    @field_validator("defences")
    @classmethod
    def _some(cls, v: list) -> list:
        if not v:
            raise ValueError("give at least one defence")
        return v

    @field_validator("risks")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"risks must be distinct, got {v}")
        return v


class ScenarioModel(Strict):
    """The top level of a scenario file (plugin sections are validated by their registries)."""

    name: str = Field(max_length=100, description="scenario name (used in the run folder path)")
    description: str = Field("", description="free text shown in the report")
    plugins: list[str] = Field(default_factory=list, description="extra Python modules to import for plugins")
    victim: dict[str, Any] = Field(description="victim section: kind + adapter parameters + output mode")
    data: dict[str, Any] = Field(description="named data sets: victim_train, test, attacker, ...")
    data_seed: Seed = Field(0, description="seed of data splits and shuffles (fixed across seeds)")
    thief: ThiefSpec = Field(default_factory=ThiefSpec)
    defences: list[Any] = Field(default_factory=lambda: ["none"], description="defences to compare")
    attacks: list[Any] = Field(description="attacks to run")
    budgets: list[Budget] = Field(description="query budget checkpoints")
    detectors: list[Any] = Field(default_factory=list, description="query detectors to compare (detection track)")
    detection: DetectionSpec = Field(default_factory=DetectionSpec, description="how detectors are compared")
    seeds: list[Seed] = Field(default_factory=lambda: [0], description="attack seeds")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    expect: list[Gate] = Field(default_factory=list, description="expectation gates")
    ownership: OwnershipSpec | None = Field(None, description="ownership resolution schemes and their suspects")
    interactions: InteractionsSpec | None = Field(None, description="defences deployed together: every pair "
                                                  "against each alone (conflict matrix)")
    output: OutputSpec = Field(default_factory=OutputSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '-', '_' or '.', starting with a letter or digit")
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one budget")
        if len(set(v)) != len(v):
            raise ValueError(f"budgets must be distinct, got {v}")
        return sorted(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one seed")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("attacks", "defences")
    @classmethod
    def _nonempty(cls, v: list) -> list:
        if not v:
            raise ValueError("give at least one entry")
        return v


# ---------------------------------------------------------------- resolved scenario

VICTIM_COMMON_KEYS = {"kind", "output", "top_k"}


@dataclass(frozen=True)
class VictimRef:
    kind: str
    output: str
    top_k: int
    params: Any
    raw: dict

    def to_dict(self) -> dict:
        return {"kind": self.kind, "output": self.output, "top_k": self.top_k,
                **self.params.model_dump(mode="json")}


@dataclass(frozen=True)
class DataRef:
    role: str
    source: str
    params: Any

    def to_dict(self) -> dict:
        return {"source": self.source, **self.params.model_dump(mode="json")}


@dataclass(frozen=True)
class Scenario:
    """A fully validated scenario: what the runner consumes."""

    model: ScenarioModel
    victim: VictimRef
    data: dict[str, DataRef]
    attacks: list[PluginRef]
    defences: list[PluginRef]
    source_path: str | None
    as_written: Any
    detectors: list[PluginRef] = dataclass_field(default_factory=list)
    #: the ownership schemes (empty without an ownership section)
    ownership: list[PluginRef] = dataclass_field(default_factory=list)
    #: the interactions section's members (stealcheck.interactions.specs.Member; empty without the section)
    interactions: list[Any] = dataclass_field(default_factory=list)
    #: key path -> line number in the scenario file, to point run-time errors at the right line
    lines: dict[tuple, int] = dataclass_field(default_factory=dict, repr=False, compare=False)
    #: the victim's keys that :func:`complete_scenario` filled in or completed (a remote endpoint's metadata):
    #: key -> value. ``as_written`` holds them too, since workers rebuild the scenario from it.
    filled_in: dict[str, Any] = dataclass_field(default_factory=dict)
    #: the scenario as the user's file says, when :func:`complete_scenario` changed ``as_written``
    user_written: Any = None
    #: whether :func:`complete_scenario` has run (it runs once, when the scenario is loaded)
    completed: bool = False

    def locate(self, exc: ScenarioError) -> ScenarioError:
        """``exc`` with the scenario file and the line of its key path filled in (when it has none)."""
        if exc.where is not None or self.source_path is None:
            return exc
        return ScenarioError(exc.message, where=_where(self.lines, self.source_path, exc.path), path=exc.path)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def written_by_user(self) -> Any:
        """The scenario as its file says, without what :func:`complete_scenario` filled in."""
        return self.as_written if self.user_written is None else self.user_written

    @property
    def base_dir(self) -> Path:
        """The folder relative paths and user modules are taken from: the scenario file's (else the
        current folder)."""
        return Path(self.source_path).resolve().parent if self.source_path else Path.cwd()

    def budgets_of(self, attack: PluginRef) -> list[int]:
        """The checkpoints of one attack: its own ``budgets`` (long form) or the scenario's."""
        return list(attack.budgets) if attack.budgets is not None else list(self.model.budgets)

    def resolved_dict(self) -> dict:
        """The scenario with every default filled in (saved as scenario.resolved.yaml)."""
        m = self.model
        return {
            "name": m.name,
            "description": m.description,
            "plugins": m.plugins,
            "victim": self.victim.to_dict(),
            "data": {k: v.to_dict() for k, v in self.data.items()},
            "data_seed": m.data_seed,
            "thief": m.thief.model_dump(mode="json"),
            "defences": [d.to_dict() for d in self.defences],
            "attacks": [a.to_dict() for a in self.attacks],
            "budgets": m.budgets,
            "detectors": [d.to_dict() for d in self.detectors],
            "detection": m.detection.model_dump(mode="json"),
            "seeds": m.seeds,
            "evaluation": m.evaluation.model_dump(mode="json"),
            "expect": [g.model_dump(mode="json") for g in m.expect],
            **({"ownership": {**m.ownership.model_dump(mode="json"), "schemes": [o.to_dict() for o in self.ownership]}}
               if m.ownership is not None else {}),
            **({"interactions": {**m.interactions.model_dump(mode="json"),
                                 "defences": [x.to_dict() for x in self.interactions]}}
               if m.interactions is not None else {}),
            "output": m.output.model_dump(mode="json"),
        }


def _where(lines: dict[tuple[str, ...], int], source: str | None, path: str | None) -> str | None:
    """``source:line`` of the deepest part of the dotted key ``path`` that the line map knows.

    The line map's parts are strings, as the path's are, so a list index ``5``, a YAML key
    ``5`` and a YAML key ``'5'`` are all the part ``'5'`` (see yamlio._line_map).
    """
    if source is None:
        return None
    if not path or not lines:
        return source
    parts = path.split(".")
    while parts:
        if tuple(parts) in lines:
            return f"{source}:{lines[tuple(parts)]}"
        # A plugin's params sit one level deeper in the file than in the key path
        # (attacks.0.knockoff.strategy, or attacks.0.params.strategy in the long form).
        for key, line in lines.items():
            if len(key) == len(parts) + 1 and any(key[:i] + key[i + 1:] == tuple(parts) for i in range(len(key))):
                return f"{source}:{line}"
        parts.pop()
    return source


def load_scenario(path: str | Path) -> Scenario:
    """Load and fully validate a scenario file (raises ScenarioError)."""
    data, lines = load_yaml(path)
    try:
        scenario = build_scenario(data, source=str(path))
        object.__setattr__(scenario, "lines", lines)  # frozen dataclass: set once, right after building
        return scenario
    except ScenarioError as exc:
        where = exc.where or _where(lines, str(path), exc.path)
        raise ScenarioError(exc.message, where=where, path=exc.path) from None


def complete_scenario(scenario: Scenario) -> Scenario:
    """The scenario with what its victim section leaves out filled in from outside, once.

    A victim kind with the ``complete`` capability (kind: remote reads its endpoint's metadata:
    input shape and range, classes, output mode) gets its section as written and returns it
    completed, or raises ScenarioError. The filled-in section replaces the one in ``as_written``,
    from which plan, data loading and Dask workers rebuild the scenario, so all of them see the
    same values; the file itself is never changed (``written_by_user`` is what it says).
    Other victims, and a scenario completed already, are returned as they are.
    """
    if scenario.completed:
        return scenario
    complete = registry.victims.get(scenario.victim.kind).caps.complete
    if complete is None or not isinstance(scenario.as_written, dict):
        object.__setattr__(scenario, "completed", True)
        return scenario
    written = dict(scenario.as_written["victim"])
    try:
        section = complete(written, "victim")
        filled = {k: v for k, v in section.items() if k not in written or written[k] != v}
        done = build_scenario({**scenario.as_written, "victim": section}, source=scenario.source_path)
    except ScenarioError as exc:
        raise scenario.locate(exc) from None
    object.__setattr__(done, "lines", scenario.lines)
    object.__setattr__(done, "filled_in", filled)
    object.__setattr__(done, "user_written", scenario.as_written)
    object.__setattr__(done, "completed", True)
    return done


def build_scenario(data: Any, source: str | None = None) -> Scenario:
    """Validate a scenario given as Python data (the YAML's contents)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"a scenario must be a mapping of sections, got {type(data).__name__}.")
    allowed = list(ScenarioModel.model_fields)
    for key in data:
        if not isinstance(key, str):
            raise ScenarioError(f"a section name must be a name (a string); got {short_repr(key)} "
                                f"({type(key).__name__}). Allowed sections: {', '.join(allowed)}.", path=str(key))
        if key not in allowed:
            raise ScenarioError(
                f"unknown section '{key}'.{did_you_mean(key, allowed)} Allowed sections: {', '.join(allowed)}.",
                path=str(key),
            )
    try:
        model = ScenarioModel.model_validate(data)
    except ValidationError as exc:
        raise pydantic_to_scenario_error(exc, ScenarioModel, "") from None
    if source is not None:
        registry.add_import_path(Path(source).resolve().parent)
    registry.load_plugins(model.plugins)

    victim = _resolve_victim(model.victim)
    data_refs = _resolve_data(model.data)
    attacks = [resolve_plugin(registry.attacks, a, f"attacks.{i}") for i, a in enumerate(model.attacks)]
    defences = [resolve_plugin(registry.defences, d, f"defences.{i}") for i, d in enumerate(model.defences)]
    detectors = [resolve_plugin(registry.detectors, d, f"detectors.{i}") for i, d in enumerate(model.detectors)]
    schemes = [resolve_plugin(registry.ownership, o, f"ownership.schemes.{i}")
               for i, o in enumerate(model.ownership.schemes)] if model.ownership is not None else []
    members = resolve_members(model.interactions) if model.interactions is not None else []
    for section, refs in (("attacks", attacks), ("defences", defences), ("detectors", detectors),
                          ("ownership.schemes", schemes), ("interactions.defences", members)):
        seen: dict[str, int] = {}
        for i, ref in enumerate(refs):
            if ref.id in seen:
                raise ScenarioError(
                    f"two entries share the id '{ref.id}' (entries {seen[ref.id]} and {i}); give one an explicit id "
                    "with the long form {plugin: NAME, id: LABEL, params: {...}}.",
                    path=f"{section}.{i}",
                )
            seen[ref.id] = i
    for i, gate in enumerate(model.expect):
        if gate.metric not in registry.metrics:
            names = registry.metrics.names()
            raise ScenarioError(f"unknown metric '{gate.metric}'.{did_you_mean(gate.metric, names)} "
                                f"Allowed: {', '.join(names)}.", path=f"expect.{i}.metric")
        deployments = [_Named(d) for d in interaction_deployment_ids(model.interactions, members)] if members else []
        for key, refs in (("attack", attacks), ("defence", defences + detectors + deployments),
                          ("detector", detectors), ("scheme", schemes)):
            sel = getattr(gate, key)
            if key == "attack" and gate.scheme is not None and sel is not None and is_ownership_suspect(sel):
                continue  # an ownership gate may select the victim, an independent model or the false claims
            if sel is not None and not any(sel in (r.id, r.plugin) for r in refs):
                ids = sorted({r.id for r in refs} | {r.plugin for r in refs})
                raise ScenarioError(f"no {key} '{sel}' in this scenario.{did_you_mean(sel, ids)} "
                                    f"Known: {', '.join(ids)}.", path=f"expect.{i}.{key}")
        if gate.budget is not None and gate.scheme is not None:
            pass  # an ownership gate's budget selects the copies stolen at that checkpoint
        elif gate.budget is not None and gate.detector is not None:
            if gate.budget not in model.detection.budgets:
                raise ScenarioError(f"budget {gate.budget} is not a detection budget ({model.detection.budgets}).",
                                    path=f"expect.{i}.budget")
        elif gate.budget is not None:
            matched = [a for a in attacks if gate.attack in (None, a.id, a.plugin)]
            known = sorted({b for a in matched for b in (a.budgets or model.budgets)})
            if gate.budget not in known:
                raise ScenarioError(f"budget {gate.budget} is not a checkpoint of the attacks this gate selects "
                                    f"({known}).", path=f"expect.{i}.budget")
    scenario = Scenario(model, victim, data_refs, attacks, defences, source, data, detectors, schemes, members)
    check_scenario(scenario)
    return scenario


def _resolve_victim(raw: dict) -> VictimRef:
    kind = raw.get("kind", "torch")
    try:
        info = registry.victims.get(str(kind))
    except ScenarioError as exc:
        raise ScenarioError(exc.message, path="victim.kind") from None
    output = raw.get("output", "probabilities")
    if output not in OUTPUT_MODES:
        raise ScenarioError(f"output must be one of {', '.join(OUTPUT_MODES)}; got {output!r}."
                            f"{did_you_mean(str(output), OUTPUT_MODES)}", path="victim.output")
    top_k = raw.get("top_k", 1)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ScenarioError(f"top_k must be a positive integer; got {top_k!r}.", path="victim.top_k")
    rest = {k: v for k, v in raw.items() if k not in VICTIM_COMMON_KEYS}
    try:
        params = info.params.model_validate(rest)
    except ValidationError as exc:
        err = pydantic_to_scenario_error(exc, info.params, "victim", what=f"victim kind '{kind}'")
        if "unknown key" in err.message and err.path and err.path.count(".") == 1:
            err = ScenarioError(err.message.rstrip(".") + f", {', '.join(sorted(VICTIM_COMMON_KEYS))}.", path=err.path)
        raise err from None
    return VictimRef(str(kind), output, top_k, params, raw)


REQUIRED_DATA_ROLES = ("test",)


def _resolve_data(raw: dict) -> dict[str, DataRef]:
    refs: dict[str, DataRef] = {}
    for role in REQUIRED_DATA_ROLES:
        if role not in raw:
            raise ScenarioError(f"missing data set '{role}'. A scenario needs at least: "
                                f"{', '.join(REQUIRED_DATA_ROLES)} (plus victim_train when the victim is trained, "
                                "and attacker when an attack samples a pool).",
                                path="data")
    for role, spec in raw.items():
        path = f"data.{role}"
        if isinstance(spec, str):
            spec = {"source": spec}
        if not isinstance(spec, dict) or "source" not in spec:
            raise ScenarioError(f"a data set needs a 'source' key (e.g. {{source: mnist5k}}); got {spec!r}.", path=path)
        source = str(spec["source"])
        try:
            info = registry.data_sources.get(source)
        except ScenarioError as exc:
            raise ScenarioError(exc.message, path=f"{path}.source") from None
        params = validate_model(info.params, {k: v for k, v in spec.items() if k != "source"}, path,
                                what=f"data source '{source}'")
        refs[role] = DataRef(role, source, params)
    return refs


def uses_pool(info: registry.PluginInfo, params: Any = None) -> bool:
    """Whether an attack samples the attacker's pool ``data.attacker`` (data-free attacks do not; an attack
    may draw its proxy from another data set, decided by its params)."""
    return bool(info.caps.uses_pool(params)) if params is not None else True


def check_scenario(scenario: Scenario) -> None:
    """Cross-section checks that need the registries (run by validate and run)."""
    victim_info = registry.victims.get(scenario.victim.kind)
    caps = victim_info.caps
    if caps.needs_training_data(scenario.victim.params) and "victim_train" not in scenario.data:
        raise ScenarioError("the victim is trained by stealcheck (no model file given), so data.victim_train is "
                            "required.", path="data")
    offered = scenario.victim.output
    if offered == "leaf" and caps.remote:
        raise ScenarioError("output: leaf cannot be used with a remote victim: its leaf ids are the model's internals, "
                            "and stealcheck reads an endpoint's probabilities output only.", path="victim.output")
    if offered == "leaf" and not caps.supports_output(scenario.victim.params, "leaf"):
        raise ScenarioError("output: leaf (leaf ids, as BigML served them) needs a decision-tree victim, e.g. "
                            "kind: sklearn with model: decision_tree.", path="victim.output")
    for i, ref in enumerate(scenario.attacks):
        info = registry.attacks.get(ref.plugin)
        need = info.caps.needs_output(ref.params)
        if need == "probabilities" and offered == "label":
            raise ScenarioError(
                f"attack '{ref.id}' needs probability outputs but the victim serves '{offered}'. "
                "Use the attack's label variant (e.g. use_probability: false) or serve probabilities.",
                path=f"attacks.{i}")
        if need == "leaf" and offered != "leaf":
            raise ScenarioError(f"attack '{ref.id}' needs leaf ids (victim output: leaf, a decision-tree victim) but "
                                f"the victim serves '{offered}'.", path=f"attacks.{i}")
        # Attack-specific checks against the victim section (e.g. a feature box vs the declared input).
        check = info.caps.check_victim
        problem = check(ref.params, scenario.victim) if check is not None else None
        if problem:
            raise ScenarioError(f"attack '{ref.id}': {problem}", path=f"attacks.{i}")
        if uses_pool(info, ref.params) and "attacker" not in scenario.data:
            raise ScenarioError(f"attack '{ref.id}' samples the attacker's pool, so data.attacker is required.",
                                path="data")
        if info.caps.needs_labels(ref.params):
            attacker = scenario.data["attacker"]
            if not registry.data_sources.get(attacker.source).caps.labelled:
                raise ScenarioError(f"attack '{ref.id}' needs a labelled attacker pool, but data source "
                                    f"'{attacker.source}' has no labels.", path=f"attacks.{i}")
        for role in info.caps.data_roles(ref.params):
            if role not in scenario.data:
                raise ScenarioError(f"attack '{ref.id}' uses the data set '{role}', which data does not define."
                                    f"{did_you_mean(role, list(scenario.data))} Defined: {', '.join(scenario.data)}.",
                                    path=f"attacks.{i}")
        for det in info.caps.detector_refs(ref.params):
            _check_score_detector(scenario, det, f"attack '{ref.id}' avoids", f"attacks.{i}")
    _check_thief(scenario)
    _check_detection(scenario)
    _check_ownership(scenario)
    _check_interactions(scenario)
    _check_output_folders(scenario)
    _check_query_memory(scenario)
    attacker = scenario.data.get("attacker")
    if attacker is not None:
        size_of = registry.data_sources.get(attacker.source).caps.static_size
        if size_of is not None:
            check_pool_size(scenario, size_of(attacker.params), f"'{attacker.source}'")


def is_image_shape(shape: tuple[int, ...] | list[int]) -> bool:
    """Whether an input shape (without the batch axis) is an image, (C, H, W) with H, W > 1."""
    return len(shape) == 3 and shape[1] > 1 and shape[2] > 1


def _check_thief(scenario: Scenario) -> None:
    """thief.augment needs image inputs; thief.unlabelled needs an attack that samples the pool."""
    thief = scenario.model.thief
    spec = getattr(scenario.victim.params, "input", None)
    if thief.augment and (spec is None or not is_image_shape(spec.shape)):
        shape = f"shape {list(spec.shape)}" if spec is not None else "no declared input shape"
        raise ScenarioError(f"thief.augment shifts and turns images, but the victim's input has {shape}; it needs "
                            "images (C, H, W). Leave augment off for tabular victims.", path="thief.augment")
    if thief.unlabelled is not None and not any(uses_pool(registry.attacks.get(a.plugin), a.params)
                                                for a in scenario.attacks):
        raise ScenarioError("thief.unlabelled trains on the unqueried samples of the attacker's pool, but no attack "
                            "of this scenario samples one (knockoff, copycat, activethief do).",
                            path="thief.unlabelled")


def check_pool_size(scenario: Scenario, size: int, description: str) -> None:
    """Every attack that samples data.attacker has at least its largest budget of samples there.

    One check for the three moments the size is known: from the source's static size (here), from
    its files (preflight) and once loaded (the run).
    """
    for i, ref in enumerate(scenario.attacks):
        if not uses_pool(registry.attacks.get(ref.plugin), ref.params):
            continue
        largest = max(scenario.budgets_of(ref))
        if size < largest:
            raise ScenarioError(
                f"the attacker pool {description} holds {size} samples, fewer than the largest budget of "
                f"attack '{ref.id}' ({largest}). Lower the budgets or use a larger pool.",
                path="budgets" if ref.budgets is None else f"attacks.{i}.budgets")


def _check_output_folders(scenario: Scenario) -> None:
    """The run and cache folders can be folders: neither they nor a parent is an existing file."""
    from .cache import default_cache_dir

    out = scenario.model.output
    cache = (Path(out.cache_dir).expanduser(), "output.cache_dir") if out.cache_dir else \
        (default_cache_dir(), "output.cache_dir (default: $STEALCHECK_CACHE_DIR or ~/.cache/stealcheck)")
    for folder, key in ((Path(out.dir).expanduser(), "output.dir"), cache):
        for part in (folder, *folder.parents):
            if part.exists():
                if not part.is_dir():
                    raise ScenarioError(f"{key} must be a folder, but {part} is a file.", path=key.split(" ")[0])
                break


def physical_memory_bytes() -> int | None:
    """This machine's RAM (None where the OS does not say)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_query_memory(scenario: Scenario) -> None:
    """Attacks that hold all their queries at once (``holds_all_queries``) must fit in half the RAM."""
    ram = physical_memory_bytes()
    if ram is None:
        return
    spec = getattr(scenario.victim.params, "input", None)
    features = math.prod(spec.shape) if spec is not None else 1
    for i, ref in enumerate(scenario.attacks):
        if not registry.attacks.get(ref.plugin).caps.holds_all_queries:
            continue
        largest = max(scenario.budgets_of(ref))
        need = largest * (features + 2) * 8  # float64 inputs, plus the answers of a binary victim at least
        if need > ram / 2:
            raise ScenarioError(
                f"attack '{ref.id}' holds all its queries in memory: {largest:,} queries of {features:,} features "
                f"need about {need / 2**30:,.1f} GiB, more than half of this machine's {ram / 2**30:,.1f} GiB. "
                "Lower the budget.", path="budgets" if ref.budgets is None else f"attacks.{i}.budgets")


def benign_role(scenario: Scenario) -> str:
    """The data set whose samples are the benign queries of the detection track."""
    spec = scenario.model.detection
    if spec.benign:
        return spec.benign
    return "benign" if "benign" in scenario.data else "test"


def _check_score_detector(scenario: Scenario, det: Any, who: str, path: str, per_client_ok: bool = False) -> None:
    """``det`` names a declared detector that scores single queries (or, with ``per_client_ok``, flags clients:
    an active defence then acts on a client's queries from its flag on, see stealcheck.defences.active)."""
    detector_ids = {d.id: d for d in scenario.detectors}
    if det not in detector_ids:
        known = ", ".join(detector_ids) or "none declared"
        raise ScenarioError(f"{who} detector '{det}', which the scenario's detectors list does not declare."
                            f"{did_you_mean(str(det), list(detector_ids))} Known: {known}.", path=path)
    if registry.detectors.get(detector_ids[det].plugin).caps.per_client and not per_client_ok:
        raise ScenarioError(f"{who} detector '{det}', which flags clients (per-client history) instead of scoring "
                            "single queries: a per-query score is needed.", path=path)


def _check_detection(scenario: Scenario) -> None:
    """Detectors, active defences and the detection section fit together."""
    spec = scenario.model.detection
    attack_ids = [a.id for a in scenario.attacks]
    for j, aid in enumerate(spec.attacks or []):
        if aid not in attack_ids:
            raise ScenarioError(f"no attack '{aid}' in this scenario.{did_you_mean(aid, attack_ids)} "
                                f"Known: {', '.join(attack_ids)}.", path=f"detection.attacks.{j}")
    if scenario.detectors:
        role = benign_role(scenario)
        if role not in scenario.data:
            raise ScenarioError(f"detection.benign names the data set '{role}', which data does not define."
                                f"{did_you_mean(role, list(scenario.data))}", path="detection.benign")
    for i, ref in enumerate(scenario.detectors):
        info = registry.detectors.get(ref.plugin)
        if info.caps.needs_outliers and spec.outliers not in scenario.data:
            raise ScenarioError(f"detector '{ref.id}' trains on an outlier set, so data.{spec.outliers} is required "
                                "(e.g. {source: glyphs}); it must differ from the attacker's pool.",
                                path=f"detectors.{i}")
        if info.caps.needs_network and registry.victims.get(scenario.victim.kind).caps.remote:
            raise ScenarioError(f"detector '{ref.id}' builds networks of the victim's architecture (its internals), "
                                f"which a remote victim (kind: {scenario.victim.kind}) does not reveal. Use a detector "
                                "that needs only the victim's answers (e.g. fusion, msp, prada), or run it against "
                                "the model in process (kind: torch).", path=f"detectors.{i}")
        if info.caps.needs_logits(ref.params) and scenario.victim.kind != "torch":
            raise ScenarioError(f"detector '{ref.id}' reads the victim's logits, which only a PyTorch victim (kind: "
                                f"torch) exposes; this victim is '{scenario.victim.kind}' (probabilities only). "
                                "For the energy detector, set temperature != 1 for its probability-only variant, or "
                                "use msp.", path=f"detectors.{i}")
        if info.caps.needs_network and scenario.victim.kind != "torch":
            raise ScenarioError(f"detector '{ref.id}' builds networks of the victim's architecture, which needs a "
                                f"PyTorch victim (kind: torch); this victim is '{scenario.victim.kind}'.",
                                path=f"detectors.{i}")
    for i, ref in enumerate(scenario.defences):
        info = registry.defences.get(ref.plugin)
        if not info.caps.needs_detector:
            continue
        _check_score_detector(scenario, getattr(ref.params, "detector", None),
                              f"defence '{ref.id}' is driven by", f"defences.{i}.detector", per_client_ok=True)


def is_ownership_suspect(name: str) -> bool:
    """Whether ``name`` is a suspect of the ownership rows other than a stolen copy (the attack column)."""
    return name in ("victim", "false_claim") or name.startswith(("independent:", "false_claim:"))


def private_role(scenario: Scenario) -> str:
    """The data set holding the victim's private training samples (ownership)."""
    spec = scenario.model.ownership
    return (spec.private if spec is not None and spec.private else None) or "victim_train"


def _check_ownership(scenario: Scenario) -> None:
    """The ownership section fits the victim, the data and the rest of the scenario."""
    spec = scenario.model.ownership
    if spec is None:
        return
    if scenario.victim.kind != "torch":
        raise ScenarioError(f"ownership schemes embed watermarks in, and keep copies of, PyTorch networks; this "
                            f"victim is '{scenario.victim.kind}' (use kind: torch).", path="ownership")
    if not scenario.model.output.cache_cells:
        raise ScenarioError("ownership verifies the stolen copies the extraction cells keep in the cache, so "
                            "output.cache_cells must be true.", path="output.cache_cells")
    data = list(scenario.data)
    private = private_role(scenario)
    embeds: dict[str, str] = {}
    for i, ref in enumerate(scenario.ownership):
        caps = registry.ownership.get(ref.plugin).caps
        where = caps.embeds(ref.params)
        if where is not None:
            if where in embeds:
                raise ScenarioError(f"schemes '{embeds[where]}' and '{ref.id}' both embed a mark in the {where}; "
                                    "list one of them per run.", path=f"ownership.schemes.{i}")
            embeds[where] = ref.id
        if caps.needs_private_data(ref.params) and private not in scenario.data:
            raise ScenarioError(f"scheme '{ref.id}' needs the victim's private training samples, but the data set "
                                f"'{private}' is not defined. Set ownership.private to the data set the victim was "
                                f"trained on.{did_you_mean(private, data)} Defined: {', '.join(data)}.",
                                path=f"ownership.schemes.{i}" if spec.private is None else "ownership.private")
    if embeds.get("training") and private not in scenario.data:
        raise ScenarioError(f"scheme '{embeds['training']}' fine-tunes the victim on its training data, but the "
                            f"data set '{private}' is not defined; set ownership.private.", path="ownership.private")
    for key, role in (("public", spec.public), ("independent_data", spec.independent_data),
                      ("false_claims.accuser_data", spec.false_claims.accuser_data)):
        if role is not None and role not in scenario.data:
            raise ScenarioError(f"ownership.{key} names the data set '{role}', which data does not define."
                                f"{did_you_mean(role, data)} Defined: {', '.join(data)}.", path=f"ownership.{key}")
    independent_role = spec.independent_data or private
    if {"other_seed", "other_arch"} & set(spec.independent) and independent_role not in scenario.data:
        raise ScenarioError(f"the independent models train on '{independent_role}', which data does not define; "
                            "set ownership.independent_data.", path="ownership.independent_data")
    pool_needed = "proxy" in spec.independent or (spec.false_claims.enabled and spec.false_claims.accuser_data is None)
    if pool_needed:
        if "attacker" not in scenario.data:
            raise ScenarioError("the proxy-pool independent model and the false-claim accuser train on the "
                                "attacker's pool, so data.attacker is required (or drop 'proxy' from "
                                "ownership.independent and set false_claims.accuser_data).", path="ownership")
        source = scenario.data["attacker"].source
        if not registry.data_sources.get(source).caps.labelled:
            raise ScenarioError(f"the proxy-pool independent model trains on the attacker's pool with its true "
                                f"labels, but data source '{source}' has no labels.", path="ownership.independent")
    if spec.budgets is not None:
        known = sorted({b for a in scenario.attacks for b in scenario.budgets_of(a)})
        for j, b in enumerate(spec.budgets):
            if b not in known:
                raise ScenarioError(f"budget {b} is not a checkpoint of any attack ({known}).",
                                    path=f"ownership.budgets.{j}")


# ---------------------------------------------------------------- interactions


@dataclass(frozen=True)
class _Named:
    """A deployment id where a gate's selector looks for defence ids (id = plugin = the deployment)."""

    id: str

    @property
    def plugin(self) -> str:
        return self.id


def resolve_members(spec: InteractionsSpec) -> list:
    """The members of interactions.defences: each looked up among the training-time defences, the ownership
    schemes and the serving-time defences (in that order), its params validated."""
    from .interactions.specs import Member

    registry.load_plugins()
    out = []
    for i, item in enumerate(spec.defences):
        path = f"interactions.defences.{i}"
        _, name, _ = split_plugin_item(item, path)
        regs = [r for r in (registry.training, registry.ownership, registry.defences) if name in r]
        if not regs:
            known = sorted(set(registry.training.names()) | set(registry.ownership.names())
                           | set(registry.defences.names()) - {"none"})
            raise ScenarioError(f"unknown defence '{name}'.{did_you_mean(name, known)} Allowed: training-time "
                                f"defences ({', '.join(registry.training.names())}), ownership schemes "
                                f"({', '.join(registry.ownership.names())}) and output perturbations "
                                "(stealcheck list defences).", path=path)
        reg = regs[0]
        ref = resolve_plugin(reg, item, path)
        if reg is registry.training:
            member = Member(ref.id, ref.plugin, "training", ref.params, "training", f"training:{ref.plugin}",
                            tuple(reg.get(ref.plugin).caps.metrics))
        elif reg is registry.ownership:
            where = reg.get(ref.plugin).caps.embeds(ref.params)
            figures = ("trigger_accuracy",) if ref.plugin == "backdoor" else ("ownership_confidence",)
            role, slot = {"training": ("training", "training:mark"), "oracle": ("serving", "serving:mark"),
                          None: ("check", "check")}[where]
            member = Member(ref.id, ref.plugin, "ownership", ref.params, role, slot, figures)
        else:
            if ref.plugin == "none":
                raise ScenarioError("'none' is not a defence to pair: the undefended deployment is always measured "
                                    "(the other-risk columns' baseline).", path=path)
            if reg.get(ref.plugin).caps.needs_detector:
                member = Member(ref.id, ref.plugin, "defences", ref.params, "serving", "serving:active",
                                ("copy_fidelity", "auroc"))
            else:
                member = Member(ref.id, ref.plugin, "defences", ref.params, "serving", "serving:answers",
                                ("copy_fidelity",))
        out.append(member)
    return out


def interaction_pairs(spec: InteractionsSpec, members: list) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(pairs to deploy, skipped pair -> why it cannot be deployed). Explicit pairs that cannot be deployed
    are errors; with ``pairs: null`` such pairs are skipped (the matrix says why)."""
    from .interactions.specs import pair_problem

    by_id = {m.id: m for m in members}
    order = {m.id: i for i, m in enumerate(members)}
    if spec.pairs is None:
        pairs, skipped = [], {}
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                problem = pair_problem(a, b)
                if problem:
                    skipped[f"{a.id}+{b.id}"] = problem
                else:
                    pairs.append((a.id, b.id))
        return pairs, skipped
    pairs, seen = [], set()
    for i, pair in enumerate(spec.pairs):
        path = f"interactions.pairs.{i}"
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ScenarioError(f"a pair names two different members, got {short_repr(pair)}.", path=path)
        for j, name in enumerate(pair):
            if name not in by_id:
                raise ScenarioError(f"no member '{name}' in interactions.defences.{did_you_mean(name, list(by_id))} "
                                    f"Members: {', '.join(by_id)}.", path=f"{path}.{j}")
        a, b = sorted(pair, key=order.get)
        if (a, b) in seen:
            raise ScenarioError(f"the pair {a} + {b} is listed twice.", path=path)
        seen.add((a, b))
        problem = pair_problem(by_id[a], by_id[b])
        if problem:
            raise ScenarioError(f"{a} and {b} cannot be deployed as a pair: {problem}.", path=path)
        pairs.append((a, b))
    return pairs, {}


def interaction_deployment_ids(spec: InteractionsSpec, members: list) -> list[str]:
    """Every deployment id the section measures: 'none', each member alone, each pair 'a+b'."""
    pairs, _ = interaction_pairs(spec, members)
    return ["none"] + [m.id for m in members] + [f"{a}+{b}" for a, b in pairs]


def _check_interactions(scenario: Scenario) -> None:
    """The interactions section fits the victim, the data and the attacks."""
    spec = scenario.model.interactions
    if spec is None:
        return
    if scenario.victim.kind != "torch":
        raise ScenarioError(f"the interactions section trains variants of a PyTorch victim (DP-SGD, adversarial "
                            f"training, watermarks); this victim is '{scenario.victim.kind}' (use kind: torch).",
                            path="interactions")
    if scenario.victim.params.weights is not None:
        raise ScenarioError("the interactions section trains every variant of the victim from data.victim_train; "
                            "a victim given by its weights cannot be retrained with DP-SGD or adversarial training "
                            "(set weights: null).", path="victim.weights")
    if not scenario.model.output.cache_cells:
        raise ScenarioError("the interactions matrix reads each deployment's results from the cache, so "
                            "output.cache_cells must be true.", path="output.cache_cells")
    interaction_pairs(spec, scenario.interactions)
    for i, m in enumerate(scenario.interactions):
        if m.slot == "serving:active":
            _check_score_detector(scenario, m.params.detector, f"interactions member '{m.id}' is driven by",
                                  f"interactions.defences.{i}")
    data = list(scenario.data)
    for key in ("private", "public"):
        role = getattr(spec, key)
        if role not in scenario.data:
            raise ScenarioError(f"interactions.{key} names the data set '{role}', which data does not define."
                                f"{did_you_mean(role, data)} Defined: {', '.join(data)}.", path=f"interactions.{key}")
        source = scenario.data[role].source
        if not registry.data_sources.get(source).caps.labelled:
            raise ScenarioError(f"interactions.{key}: data set '{role}' ({source}) has no labels.",
                                path=f"interactions.{key}")
    if spec.private == spec.public:
        raise ScenarioError(f"interactions.private and interactions.public both name '{spec.private}': membership "
                            "inference and dataset inference compare the members with non-members, so they must be "
                            "different data sets.", path="interactions.public")
    attack = extraction_attack(scenario)
    if attack is None:
        ids = [a.id for a in scenario.attacks]
        raise ScenarioError(f"no attack '{spec.extraction.attack}' in this scenario."
                            f"{did_you_mean(spec.extraction.attack, ids)} Known: {', '.join(ids)}.",
                            path="interactions.extraction.attack")
    if spec.extraction.budget is not None and spec.extraction.budget not in scenario.budgets_of(attack):
        raise ScenarioError(f"budget {spec.extraction.budget} is not a checkpoint of attack '{attack.id}' "
                            f"({scenario.budgets_of(attack)}).", path="interactions.extraction.budget")


def extraction_attack(scenario: Scenario) -> PluginRef | None:
    """The attack the interactions section steals each deployment with."""
    wanted = scenario.model.interactions.extraction.attack
    if wanted is None:
        return scenario.attacks[0]
    return next((a for a in scenario.attacks if a.id == wanted), None)
