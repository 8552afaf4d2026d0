"""What validate and the runner know about a plugin before running it: typed capabilities.

Each kind of plugin has a small frozen dataclass. A registration passes them as keywords
(``attacks.declare("knockoff", ..., uses_pool=lambda p: p.pool_data is None)``); unknown names are
errors, and a field that depends on the plugin's parameters accepts a constant or a function of
the params (stored as a function, so readers always call it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Literal


def _constant(value: Any) -> Callable[..., Any]:
    return lambda *args: value


@dataclass(frozen=True)
class Capabilities:
    """Base: builds from registration keywords, turning constants into functions where a field is one."""

    #: fields that are functions of the params (or of the params and more); a constant is wrapped
    FUNCTIONS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def build(cls, kind: str, name: str, given: dict[str, Any], obj: Any = None) -> "Capabilities":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"Unknown capabilit{'y' if len(unknown) == 1 else 'ies'} {unknown} for {kind} "
                             f"'{name}'. Known: {', '.join(known) or 'none'}.")
        values = cls._from_implementation(obj)
        values.update(given)
        for key in cls.FUNCTIONS:
            if key in values and values[key] is not None and not callable(values[key]):
                values[key] = _constant(values[key])
        return cls(**values)

    @classmethod
    def _from_implementation(cls, obj: Any) -> dict[str, Any]:
        """Defaults read off an eagerly registered implementation (none by default)."""
        return {}


@dataclass(frozen=True)
class AttackCapabilities(Capabilities):
    """What an attack needs from the scenario (all functions of the attack's params)."""

    FUNCTIONS = ("needs_output", "needs_labels", "uses_pool", "data_roles", "detector_refs")

    #: the output mode the attack needs: "probabilities", "leaf" or None (labels are enough)
    needs_output: Callable[[Any], str | None] = _constant(None)
    #: whether the attacker's pool must carry labels
    needs_labels: Callable[[Any], bool] = _constant(False)
    #: whether the attack samples data.attacker
    uses_pool: Callable[[Any], bool] = _constant(True)
    #: other data roles the attack reads (they must be defined under data:)
    data_roles: Callable[[Any], list[str]] = _constant([])
    #: detector ids an adaptive attacker reads the scores of
    detector_refs: Callable[[Any], list[str]] = _constant([])
    #: (params, pool, load_data) -> distinct samples it can query; None = len(data.attacker)
    pool_size: Callable[..., int | None] | None = None
    #: (params, victim ref) -> a problem with the victim section, or None
    check_victim: Callable[[Any, Any], str | None] | None = None
    #: the attack holds every query in memory at once (validate checks the memory a budget needs)
    holds_all_queries: bool = False


@dataclass(frozen=True)
class DefenceCapabilities(Capabilities):
    """What a defence needs: a detector (active defences) or nothing."""

    #: driven by a declared per-query detector (its params name it in ``detector``)
    needs_detector: bool = False


@dataclass(frozen=True)
class DetectorCapabilities(Capabilities):
    """What a detector needs and how it answers (the Detector class attributes of the same names)."""

    FUNCTIONS = ("needs_logits",)

    per_client: bool = False
    needs_network: bool = False
    needs_outliers: bool = False
    replaces_victim: bool = False
    #: params -> whether it reads the victim's logits (a PyTorch victim's internals), e.g. energy at temperature 1
    needs_logits: Callable[[Any], bool] = _constant(False)

    @classmethod
    def _from_implementation(cls, obj: Any) -> dict[str, Any]:
        return {f.name: bool(getattr(obj, f.name)) for f in fields(cls)
                if obj is not None and hasattr(obj, f.name) and f.name not in cls.FUNCTIONS}


@dataclass(frozen=True)
class VictimCapabilities(Capabilities):
    """What a victim adapter needs and offers (functions of the victim's params)."""

    FUNCTIONS = ("needs_training_data", "supports_output")

    #: whether stealcheck trains it from data.victim_train
    needs_training_data: Callable[[Any], bool] = _constant(True)
    #: (params, output mode) -> whether the API can serve that mode; every mode but leaf by default
    supports_output: Callable[[Any, str], bool] = lambda p, mode: mode != "leaf"
    #: params -> (architecture, arch_params) of the default thief; None = known only at run time
    thief_architecture: Callable[[Any], tuple[str, dict]] | None = None
    #: the victim answers from outside this process (kind: remote): nothing of its internals is known (no
    #: network, logits or parameters for detectors), and what it answers may change behind its address, so
    #: its cells' results are never reused from the cache (resume still works through the journal)
    remote: bool = False
    #: (victim section as written, key path) -> the same section with what it leaves out filled in (a
    #: remote endpoint's metadata), raising ScenarioError for what cannot work; called once when the
    #: scenario is loaded (stealcheck.scenario.complete_scenario). None = nothing to fill in
    complete: Callable[[dict, str], dict] | None = None


@dataclass(frozen=True)
class DataCapabilities(Capabilities):
    """What validate can learn about a data source without loading it."""

    #: whether its samples carry labels
    labelled: bool = True
    #: params -> number of samples, when known without reading anything
    static_size: Callable[[Any], int] | None = None
    #: (params, ctx, key path) -> DataFacts, checking its files cheaply (stealcheck.preflight)
    inspect: Callable[..., Any] | None = None


@dataclass(frozen=True)
class MetricCapabilities(Capabilities):
    """Where a metric's rows come from."""

    scope: Literal["extraction", "utility", "service", "detection", "detector", "ownership",
                   "interaction"] = "extraction"
    #: written by the runner or an attack itself, not computed from an evaluation object
    computed_by_runner: bool = False


@dataclass(frozen=True)
class OwnershipCapabilities(Capabilities):
    """What an ownership scheme changes and needs (functions of the scheme's params where noted).

    ``embeds`` says where the scheme leaves its mark before anything is stolen: ``"training"`` (the
    victim is trained or fine-tuned with extra samples, e.g. a backdoor trigger set), ``"oracle"``
    (the API changes some answers, e.g. DAWN) or ``None`` (the scheme only observes: fingerprints,
    dataset inference). A training embedding is what a training-time defence (DP-SGD, adversarial
    training) composes with: both act on the victim's training set and recipe.
    """

    FUNCTIONS = ("embeds", "needs_private_data", "false_claims")

    embeds: Callable[[Any], Literal["training", "oracle"] | None] = _constant(None)
    #: whether verification needs the victim's private training samples (dataset inference)
    needs_private_data: Callable[[Any], bool] = _constant(False)
    #: whether a false claim can be made against it with adversarial examples presented as evidence
    false_claims: Callable[[Any], bool] = _constant(True)


@dataclass(frozen=True)
class TrainingCapabilities(Capabilities):
    """What a training-time defence (the interactions section) is measured by.

    ``metrics``: the defence's own figures (interaction metric names) that the conflict rule checks.
    """

    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnyCapabilities(Capabilities):
    """For registries made in tests or by third parties: no capability is known."""
