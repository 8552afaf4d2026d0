"""Typed plugin registries: attacks, defences, detectors, victims, data sources, metrics, ownership schemes,
training-time defences.

A plugin registers itself with a decorator and a pydantic params model::

    @attacks.register("knockoff", params=KnockoffParams)
    class KnockoffAttack: ...

The runner only ever looks plugins up by the name a scenario gives; it never imports a
concrete plugin. :func:`load_plugins` imports the built-in plugin packages, any package
that declares a ``stealcheck.plugins`` entry point, and modules a scenario lists under
``plugins:``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Callable, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict

from .capabilities import (AnyCapabilities, AttackCapabilities, Capabilities, DataCapabilities,
                           DefenceCapabilities, DetectorCapabilities, MetricCapabilities, OwnershipCapabilities,
                           TrainingCapabilities, VictimCapabilities)
from .errors import ScenarioError, did_you_mean, shorten


#: The configuration of every params model: unknown keys are errors, numbers are what they say
#: (strict: `true` is not the integer 1, `1.5` is not an int, `"3"` is not a number) and finite
#: (`.inf` and `.nan` are refused, so no bound or gate can be switched off by a NaN).
PARAMS_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


#: A [low, high] pair written as a YAML list, validated strictly element by element.
FloatPair = Annotated[tuple[float, float], BeforeValidator(_list_to_tuple)]


class NoParams(BaseModel):
    """Params model of a plugin that takes no parameters."""

    model_config = PARAMS_CONFIG


@dataclass(frozen=True)
class PluginInfo:
    """What the registry knows about one plugin.

    ``obj`` is the implementation. A plugin registered with :meth:`Registry.declare` names it as
    ``"module:attribute"`` in ``impl`` and it is imported on first access, so that validating a
    scenario or listing plugins never imports torch or ART.
    """

    kind: str
    name: str
    obj_: Any
    params: type[BaseModel]
    caps: Capabilities = field(default_factory=AnyCapabilities)
    impl: str | None = None
    summary: str | None = None

    @property
    def obj(self) -> Any:
        """The implementation (imported now if it was declared lazily)."""
        if self.obj_ is None and self.impl is not None:
            module, _, attr = self.impl.partition(":")
            object.__setattr__(self, "obj_", getattr(importlib.import_module(module), attr))
        return self.obj_

    @property
    def description(self) -> str:
        """The plugin's summary: its declared one, else the first paragraph of its docstring."""
        if self.summary:
            return self.summary
        doc = inspect.getdoc(self.obj) or ""
        return " ".join(doc.split("\n\n")[0].split())

    def parse_params(self, raw: dict[str, Any] | None) -> BaseModel:
        """Validate ``raw`` against the params model (raises pydantic's ValidationError)."""
        return self.params.model_validate(raw or {})

    def param_table(self) -> list[tuple[str, str, str, str]]:
        """(name, type, default, description) for every parameter, for `stealcheck list` and docs."""
        rows = []
        for pname, finfo in self.params.model_fields.items():
            tname = type_name(finfo.annotation)
            if finfo.is_required():
                default = "(required)"
            else:
                value = finfo.default_factory() if finfo.default_factory is not None else finfo.default
                default = default_text(value)
            rows.append((pname, tname, default, finfo.description or ""))
        return rows


def default_text(value: Any) -> str:
    """A default as a scenario would write it: a nested params model shows only what differs from
    its own defaults (its other keys are listed with the plugin that owns them)."""
    if isinstance(value, BaseModel):
        changed = {k: getattr(value, k) for k in value.model_fields_set}
        if not changed:
            return "{} (every key at its default)"
        inner = ", ".join(f"{k}: {v!r}" for k, v in changed.items())
        return "{" + inner + "} (other keys at their defaults)"
    return repr(value)


def type_name(ann: Any) -> str:
    """Readable type of a params field: 'int', 'random | adaptive', 'str | None'."""
    origin = get_origin(ann)
    if origin is Annotated:
        return type_name(get_args(ann)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(ann))
    if origin in (Union, UnionType):
        return " | ".join(type_name(a) for a in get_args(ann))
    if ann is type(None):
        return "None"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "mapping"
    if origin is not None:
        args = ", ".join(type_name(a) for a in get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))


class Registry:
    """Name -> plugin for one kind of plugin."""

    def __init__(self, kind: str, singular: str, capabilities: type[Capabilities] = AnyCapabilities):
        self.kind = kind
        self.singular = singular
        self.capabilities = capabilities
        self._plugins: dict[str, PluginInfo] = {}

    def register(self, name: str, params: type[BaseModel] = NoParams, **capabilities: Any) -> Callable:
        """Class or function decorator registering ``obj`` under ``name``, with its capabilities
        (the fields of this kind's :mod:`capabilities <stealcheck.capabilities>` dataclass)."""

        def decorator(obj: Any) -> Any:
            caps = self.capabilities.build(self.singular, name, capabilities, obj)
            self._add(PluginInfo(self.kind, name, obj, params, caps))
            return obj

        return decorator

    def declare(self, name: str, impl: str, *, summary: str, params: type[BaseModel] = NoParams,
                **capabilities: Any) -> None:
        """Register ``name`` without importing it: ``impl`` is ``"module:attribute"``, imported on first use.

        Every capability validate or the runner reads before a run is given here, since the
        implementation's attributes are not read until it is imported.
        """
        caps = self.capabilities.build(self.singular, name, capabilities)
        self._add(PluginInfo(self.kind, name, None, params, caps, impl=impl, summary=summary))

    def _add(self, info: PluginInfo) -> None:
        known = self._plugins.get(info.name)
        if known is not None and (known.impl, known.obj_) != (info.impl, info.obj_):
            raise ValueError(f"A {self.singular} named '{info.name}' is already registered.")
        if info.params.model_config.get("extra") != "forbid":
            raise ValueError(f"The params model of {self.singular} '{info.name}' must set extra='forbid'.")
        self._plugins[info.name] = info

    def get(self, name: str) -> PluginInfo:
        """Look a plugin up; unknown names raise ScenarioError with a suggestion."""
        load_plugins()
        if name not in self._plugins:
            allowed = sorted(self._plugins)
            raise ScenarioError(
                f"Unknown {self.singular} '{name}'.{did_you_mean(name, allowed)} "
                f"Allowed: {', '.join(allowed)}."
            )
        return self._plugins[name]

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._plugins)

    def items(self) -> list[PluginInfo]:
        load_plugins()
        return [self._plugins[n] for n in sorted(self._plugins)]

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._plugins


attacks = Registry("attacks", "attack", AttackCapabilities)
defences = Registry("defences", "defence", DefenceCapabilities)
detectors = Registry("detectors", "detector", DetectorCapabilities)
victims = Registry("victims", "victim kind", VictimCapabilities)
data_sources = Registry("data", "data source", DataCapabilities)
metrics = Registry("metrics", "metric", MetricCapabilities)
ownership = Registry("ownership", "ownership scheme", OwnershipCapabilities)
training = Registry("training", "training-time defence", TrainingCapabilities)

REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (attacks, defences, detectors, victims, data_sources, metrics, ownership, training)
}

# Packages holding the built-in plugins; importing them runs their decorators.
BUILTIN_PLUGIN_PACKAGES = (
    "stealcheck.metrics",
    "stealcheck.attacks",
    "stealcheck.defences",
    "stealcheck.detectors",
    "stealcheck.adapters",
    "stealcheck.ownership",
    "stealcheck.interactions",
)
ENTRY_POINT_GROUP = "stealcheck.plugins"
_loaded = False


def load_plugins(extra_modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import built-in plugins, entry-point plugins, and ``extra_modules`` (idempotent)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for pkg in BUILTIN_PLUGIN_PACKAGES:
            importlib.import_module(pkg)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            ep.load()
    for i, mod in enumerate(extra_modules):
        import_user_module(mod, f"plugins.{i}", "plugin module")


def add_import_path(folder: Any) -> None:
    """Put a scenario's folder on ``sys.path`` (once), so that its ``plugins:`` modules and
    ``module:callable`` architectures beside the scenario file import by name.

    It goes last, not first: a file beside a scenario (``sklearn.py``, ``art.py``) must never replace
    an installed package that stealcheck imports later.
    """
    import sys

    entry = str(Path(folder).resolve())
    if entry not in sys.path:
        sys.path.append(entry)
        importlib.invalidate_caches()


def import_user_module(name: Any, path: str, what: str = "module") -> Any:
    """Import a module named in a scenario; every failure is a ScenarioError at ``path``.

    The module's own code runs, so any exception it raises is reported (with its type), not only
    ImportError. Relative names ('.x') are refused: there is no package to be relative to.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name):
        raise ScenarioError(f"{what} names must be dotted Python module names such as 'mypkg.plugins'; "
                            f"got {name!r}.", path=path)
    try:
        return importlib.import_module(name)
    except ScenarioError:
        raise
    except BaseException as exc:  # a user module may raise anything while it is imported (even SystemExit)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ScenarioError(f"cannot import {what} '{name}' (from {path}): {type(exc).__name__}: "
                            f"{shorten(str(exc), 300)}. The scenario's folder is on the import path, so a "
                            "module beside the scenario file can be named directly.", path=path) from None
