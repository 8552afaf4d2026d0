"""Plugin registries: registration rules, lookups with suggestions, and a conformance test that
every registered plugin (of every kind) must pass."""

from __future__ import annotations

import types
import typing
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stealcheck import registry
from stealcheck.errors import ScenarioError
from stealcheck.registry import NoParams, Registry


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(3, gt=0, description="how big")


def test_decorator_registers_and_returns_the_object():
    reg = Registry("things", "thing")

    @reg.register("widget", params=_Params)
    class Widget:
        """A widget.

        More text that is not part of the description.
        """

    assert Widget.__name__ == "Widget"  # the decorator returns the class itself
    info = reg.get("widget")
    assert info.obj is Widget and info.params is _Params and info.kind == "things" and info.name == "widget"
    assert info.description == "A widget."
    assert info.parse_params({"size": 5}).size == 5
    assert info.parse_params(None).size == 3
    assert reg.names() == ["widget"] and "widget" in reg and "gadget" not in reg
    assert info.param_table() == [("size", "int", "3", "how big")]


def test_capabilities_are_typed_and_unknown_ones_are_refused():
    from stealcheck.capabilities import AttackCapabilities

    reg = Registry("attacks", "attack", AttackCapabilities)
    reg.declare("lazy", "nowhere.at_all:Attack", summary="An attack never imported.", uses_pool=False,
                needs_output=lambda p: "probabilities")
    caps = reg.get("lazy").caps
    assert caps.uses_pool(None) is False  # a constant becomes a function of the params
    assert caps.needs_output(None) == "probabilities" and caps.data_roles(None) == []
    with pytest.raises(ValueError, match="Unknown capability \\['colour'\\] for attack 'widget'.*Known: needs_output"):
        reg.declare("widget", "nowhere:Widget", summary="x", colour="blue")


def test_eager_detectors_take_their_flags_from_the_class():
    from stealcheck.capabilities import DetectorCapabilities

    reg = Registry("detectors", "detector", DetectorCapabilities)

    @reg.register("flagger")
    class Flagger:
        """Flags clients."""

        per_client = True

    assert reg.get("flagger").caps.per_client is True and reg.get("flagger").caps.needs_network is False


def test_function_plugins_default_to_no_params():
    reg = Registry("things", "thing")

    @reg.register("f")
    def f():
        """Does f."""

    assert reg.get("f").params is NoParams
    with pytest.raises(ValidationError):
        reg.get("f").parse_params({"anything": 1})


def test_unknown_name_raises_scenario_error_with_suggestion():
    reg = Registry("things", "thing")
    reg.register("widget")(type("Widget", (), {"__doc__": "W."}))
    reg.register("gizmo")(type("Gizmo", (), {"__doc__": "G."}))
    with pytest.raises(ScenarioError) as info:
        reg.get("widgte")
    msg = str(info.value)
    assert "Unknown thing 'widgte'" in msg
    assert "Did you mean 'widget'?" in msg
    assert "Allowed: gizmo, widget." in msg


def test_unknown_name_far_from_everything_has_no_suggestion():
    reg = Registry("things", "thing")
    reg.register("widget")(type("Widget", (), {}))
    with pytest.raises(ScenarioError) as info:
        reg.get("zzzzzzzz")
    assert "Did you mean" not in str(info.value)


def test_builtin_registry_suggests_the_closest_attack():
    with pytest.raises(ScenarioError) as info:
        registry.attacks.get("knockof")
    assert "Did you mean 'knockoff'?" in str(info.value)


def test_duplicate_registration_of_a_different_object_raises():
    reg = Registry("things", "thing")

    class A:
        pass

    class B:
        pass

    reg.register("a")(A)
    reg.register("a")(A)  # the same object again (e.g. a module re-imported): fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(B)
    assert reg.get("a").obj is A


def test_params_model_must_forbid_extra_keys():
    reg = Registry("things", "thing")

    class Loose(BaseModel):
        x: int = 1

    class Ignoring(BaseModel):
        model_config = ConfigDict(extra="ignore")
        x: int = 1

    for model in (Loose, Ignoring):
        with pytest.raises(ValueError, match="extra='forbid'"):
            reg.register("loose", params=model)(type("P", (), {}))
    assert "loose" not in reg


def test_load_plugins_reports_unimportable_module():
    with pytest.raises(ScenarioError) as info:
        registry.load_plugins(["stealcheck_no_such_plugin_module"])
    assert "stealcheck_no_such_plugin_module" in str(info.value)


# ---------------------------------------------------------------- conformance of every registered plugin

registry.load_plugins()
ALL_PLUGINS = [(kind, name) for kind, reg in registry.REGISTRIES.items() for name in reg.names()]


def test_every_kind_has_builtin_plugins():
    kinds = {kind for kind, _ in ALL_PLUGINS}
    assert {"attacks", "defences", "detectors", "victims", "data", "metrics", "ownership"} <= kinds
    assert ("attacks", "knockoff") in ALL_PLUGINS and ("defences", "label_only") in ALL_PLUGINS


def _is_scalar(annotation) -> bool:
    """True for int/float/bool/Literal annotations (possibly Optional / unions of them)."""
    if annotation in (int, float, bool):
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_is_scalar(a) for a in args)
    return False


@pytest.mark.parametrize("kind,name", ALL_PLUGINS, ids=[f"{k}:{n}" for k, n in ALL_PLUGINS])
def test_plugin_conformance(kind, name):
    info = registry.REGISTRIES[kind].get(name)
    params = info.params

    # a params model that refuses unknown keys
    assert isinstance(params, type) and issubclass(params, BaseModel)
    assert params.model_config.get("extra") == "forbid"

    # a docstring: `stealcheck list` and the docs show its first line
    assert info.description.strip(), f"{kind} '{name}' has no docstring"

    # defaults are valid when nothing is required
    required = [f for f, fi in params.model_fields.items() if fi.is_required()]
    if not required:
        model = params.model_validate({})
        assert isinstance(model, params)
        model.model_dump(mode="json")  # and serialisable (resolved scenario, cache keys)

    # unknown keys are refused
    with pytest.raises(ValidationError) as exc:
        params.model_validate({"definitely_not_a_parameter": 1})
    assert any(e["type"] == "extra_forbidden" for e in exc.value.errors())

    # wrongly typed values are refused for every numeric / bool / literal field
    for field, finfo in params.model_fields.items():
        if not _is_scalar(finfo.annotation):
            continue
        with pytest.raises(ValidationError) as exc:
            params.model_validate({field: {"x": 1}})
        assert any(e["loc"][:1] == (field,) for e in exc.value.errors()), (field, exc.value.errors())


def test_plugins_have_kind_specific_entry_points():
    for info in registry.attacks.items():
        assert callable(getattr(info.obj, "run", None)), info.name
        assert callable(info.caps.needs_output), info.name
    for info in registry.defences.items():
        assert callable(getattr(info.obj, "build", None)), info.name
        if info.caps.needs_detector:
            # active defences are driven by a detector the scenario declares
            assert "detector" in info.params.model_fields, info.name
    from stealcheck.detectors.detectors import Detector

    for info in registry.detectors.items():
        assert isinstance(info.obj, type) and issubclass(info.obj, Detector), info.name
        det = info.obj(info.parse_params({}))  # constructors store params and do nothing else
        assert det.fit_seconds is None
        if info.obj.per_client:
            assert info.obj.flag_stream is not Detector.flag_stream, info.name
    for info in registry.victims.items():
        assert callable(getattr(info.obj, "build", None)), info.name
    for info in registry.metrics.items():
        assert info.caps.scope in ("extraction", "utility", "service", "detection", "detector", "ownership",
                                   "interaction"), info.name
        assert callable(info.obj)
    for info in registry.data_sources.items():
        assert callable(info.obj)
        assert isinstance(info.caps.labelled, bool), info.name
    from stealcheck.ownership.base import OwnershipScheme

    for info in registry.ownership.items():
        assert isinstance(info.obj, type) and issubclass(info.obj, OwnershipScheme), info.name
        assert info.obj.verify is not OwnershipScheme.verify, info.name  # every scheme verifies
        params = info.parse_params({})
        assert info.caps.embeds(params) in (None, "training", "oracle"), info.name
        assert isinstance(info.caps.needs_private_data(params), bool), info.name
        assert isinstance(info.caps.false_claims(params), bool), info.name
