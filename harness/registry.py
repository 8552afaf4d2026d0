"""Typed plugin registries: attacks, defences, detectors, victims, data sources, metrics.

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
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import UnionType
from typing import Any, Callable, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from .errors import ScenarioError, did_you_mean


class NoParams(BaseModel):
    """Params model of a plugin that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class PluginInfo:
    """What the registry knows about one plugin."""

    kind: str
    name: str
    obj: Any
    params: type[BaseModel]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """First line of the plugin's docstring."""
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

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
            elif finfo.default_factory is not None:
                default = repr(finfo.default_factory())
            else:
                default = repr(finfo.default)
            rows.append((pname, tname, default, finfo.description or ""))
        return rows


def type_name(ann: Any) -> str:
    """Readable type of a params field: 'int', 'random | adaptive', 'str | None'."""
    origin = get_origin(ann)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(ann))
    if origin in (Union, UnionType):
        return " | ".join(type_name(a) for a in get_args(ann))
    if ann is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(type_name(a) for a in get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))


class Registry:
    """Name -> plugin for one kind of plugin."""

    def __init__(self, kind: str, singular: str):
        self.kind = kind
        self.singular = singular
        self._plugins: dict[str, PluginInfo] = {}

    def register(self, name: str, params: type[BaseModel] = NoParams, **meta: Any) -> Callable:
        """Class or function decorator registering ``obj`` under ``name``."""

        def decorator(obj: Any) -> Any:
            if name in self._plugins and self._plugins[name].obj is not obj:
                raise ValueError(f"A {self.singular} named '{name}' is already registered.")
            if params.model_config.get("extra") != "forbid":
                raise ValueError(f"The params model of {self.singular} '{name}' must set extra='forbid'.")
            self._plugins[name] = PluginInfo(self.kind, name, obj, params, dict(meta))
            return obj

        return decorator

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


attacks = Registry("attacks", "attack")
defences = Registry("defences", "defence")
detectors = Registry("detectors", "detector")
victims = Registry("victims", "victim kind")
data_sources = Registry("data", "data source")
metrics = Registry("metrics", "metric")

REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (attacks, defences, detectors, victims, data_sources, metrics)
}

# Packages holding the built-in plugins; importing them runs their decorators.
BUILTIN_PLUGIN_PACKAGES = (
    "stealcheck.metrics",
    "stealcheck.attacks",
    "stealcheck.defences",
    "stealcheck.adapters",
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
    for mod in extra_modules:
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ScenarioError(f"Cannot import plugin module '{mod}': {exc}", path="plugins") from exc
