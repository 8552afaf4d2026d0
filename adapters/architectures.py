"""What the network architectures accept, known without importing torch.

:mod:`.networks` builds the networks (and imports torch); this module holds what validating a
scenario needs to know about them, so that ``stealcheck validate`` checks ``architecture`` and
``arch_params`` without importing torch:

- the built-in architectures (``conv3``, ``mlp``, ``resnet18``): a pydantic model of each one's
  ``arch_params`` and the input shapes it can take. :func:`.networks.build_network` validates
  ``arch_params`` with the same models, so the two cannot disagree;
- user architectures (``package.module:callable``): how the module is imported (the scenario's
  folder first on ``sys.path``) and which keywords the callable is given, mapped by its signature
  (:func:`call_keywords`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stealcheck import registry
from stealcheck.errors import ScenarioError, did_you_mean, short_repr


# Strict, as plugin parameters are: a width of 16.0 or true is an error, not 16 or 1.
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Conv3Params(BaseModel):
    model_config = _STRICT
    width: int = Field(16, gt=0, le=4096, description="channels of the first conv layer (then 2x, 4x)")


class MlpParams(BaseModel):
    model_config = _STRICT
    hidden: list[int] | None = Field(None, description="widths of the hidden layers; null = [64]")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(h <= 0 or h > 1_000_000 for h in v):
            raise ValueError(f"every hidden width must be a positive integer (at most 1000000), got {v}")
        return v


class Resnet18Params(BaseModel):
    model_config = _STRICT


@dataclass(frozen=True)
class BuiltinArchitecture:
    """A built-in architecture: its ``arch_params`` model and what input shape it needs."""

    params: type[BaseModel]
    input_ndim: int | None  # 3 = images (C, H, W); None = any shape
    min_side: int = 1  # smallest H and W (conv3 pools three times)
    summary: str = ""


BUILTIN_ARCHITECTURES: dict[str, BuiltinArchitecture] = {
    "conv3": BuiltinArchitecture(Conv3Params, 3, 8, "three 3x3 conv layers (width, 2*width, 4*width) and a "
                                 "linear head; image inputs (C, H, W) of at least 8x8"),
    "mlp": BuiltinArchitecture(MlpParams, None, 1, "fully connected ReLU network over the flattened input"),
    "resnet18": BuiltinArchitecture(Resnet18Params, 3, 1, "torchvision's ResNet-18, first conv adapted to the "
                                    "input's channels; image inputs (C, H, W)"),
}

# Keyword spellings a user callable may use for the number of classes and for the input.
CLASS_KEYWORDS = ("nb_classes", "num_classes", "n_classes", "classes")
SHAPE_KEYWORDS = ("input_shape", "in_shape")
CHANNEL_KEYWORDS = ("in_channels", "in_chans", "num_channels", "channels")  # images: input_shape[0]
FEATURE_KEYWORDS = ("in_features", "input_dim", "input_size", "n_features", "num_features")  # (d,) inputs: d


def unknown_architecture(architecture: str, path: str) -> ScenarioError:
    allowed = list(BUILTIN_ARCHITECTURES)
    return ScenarioError(f"unknown architecture '{architecture}'.{did_you_mean(architecture, allowed)} Use one of "
                         f"{', '.join(allowed)}, timm:NAME, torchvision:NAME or package.module:callable.", path=path)


def check_builtin(architecture: str, arch_params: dict[str, Any] | None, input_shape: tuple[int, ...] | list[int],
                  section: str = "victim") -> BaseModel:
    """Validate a built-in architecture's ``arch_params`` and input shape; returns the params model.

    Raises ScenarioError at ``{section}.architecture`` / ``{section}.arch_params``.
    """
    spec = BUILTIN_ARCHITECTURES[architecture]
    try:
        params = spec.params.model_validate(dict(arch_params or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = list(spec.params.model_fields)
        if err["type"] == "extra_forbidden":
            accepts = f"it accepts: {', '.join(allowed)}" if allowed else "it takes no arch_params"
            msg = f"{architecture} does not accept the keyword '{key}' given in arch_params.{did_you_mean(key, allowed)} " \
                  f"{accepts[0].upper() + accepts[1:]}."
        else:
            text = err["msg"].removeprefix("Value error, ")
            msg = f"invalid arch_params for {architecture}: {key}: {text}; got {short_repr(err.get('input'))}."
        raise ScenarioError(msg, path=f"{section}.arch_params" + (f".{key}" if key else "")) from None
    shape = tuple(input_shape)
    if spec.input_ndim is not None and len(shape) != spec.input_ndim:
        raise ScenarioError(f"architecture '{architecture}' needs an image input shape (C, H, W), but the input shape "
                            f"is {list(shape)}. Use mlp for tabular inputs.", path=f"{section}.architecture")
    if spec.input_ndim == 3 and min(shape[1:]) < spec.min_side:
        raise ScenarioError(f"architecture '{architecture}' needs images of at least {spec.min_side}x{spec.min_side}; "
                            f"the input shape is {list(shape)}.", path=f"{section}.architecture")
    return params


# ---------------------------------------------------------------- user callables


def import_user_module(module: str, base_dir: str | Path | None, path: str = "victim.architecture"):
    """Import ``module`` for an architecture ``module:callable``, with the scenario's folder on sys.path.

    A module next to the scenario (``mynets.py`` beside ``scenario.yaml``: ``architecture:
    mynets:lenet``) imports without installing it; validate and run import it the same way
    (:func:`stealcheck.registry.import_user_module`).
    """
    if base_dir is not None:
        registry.add_import_path(base_dir)
    return registry.import_user_module(module, path, "module")


def load_user_callable(architecture: str, base_dir: str | Path | None,
                       path: str = "victim.architecture") -> Callable[..., Any]:
    """The callable named by ``package.module:callable`` (dotted attributes allowed after the colon)."""
    mod_name, _, attr = architecture.partition(":")
    if not mod_name or not attr:
        raise ScenarioError(f"architecture '{architecture}' must be 'package.module:callable'.", path=path)
    obj: Any = import_user_module(mod_name, base_dir, path)
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
            raise ScenarioError(f"module '{mod_name}' has no attribute '{attr}'.{did_you_mean(part, names)} "
                                f"Callables there: {', '.join(names[:20]) or 'none'}.", path=path)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ScenarioError(f"'{architecture}' is a {type(obj).__name__}, not a callable that returns a network.",
                            path=path)
    return obj


def call_keywords(fn: Callable[..., Any], label: str, input_shape: tuple[int, ...] | list[int],
                  nb_classes: int | None, arch_params: dict[str, Any] | None,
                  section: str = "victim") -> dict[str, Any]:
    """The keyword arguments a user architecture is called with, mapped by its signature.

    - the number of classes goes to the first of ``nb_classes``, ``num_classes``, ``n_classes``,
      ``classes`` that the callable names; ``nb_classes`` if it only takes ``**kwargs``; nothing if it
      takes none of them (a network with a fixed number of outputs);
    - the input goes to ``input_shape`` / ``in_shape`` (the tuple), ``in_channels`` / ``in_chans`` /
      ``num_channels`` / ``channels`` (C of a (C, H, W) input) and ``in_features`` / ``input_dim`` /
      ``input_size`` / ``n_features`` / ``num_features`` (d of a (d,) input), each only when the
      callable names it; ``input_shape`` if it only takes ``**kwargs``;
    - ``arch_params`` are passed as given and win over a derived input keyword; a class-count
      keyword in them is an error (the number of classes is the victim's).

    Raises ScenarioError naming the keyword that does not fit (``{section}.arch_params.KEY``), or a
    required parameter that nothing provides (``{section}.architecture``).
    """
    given = dict(arch_params or {})
    shape = tuple(int(d) for d in input_shape)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # no introspectable signature (a builtin): call as documented
        return {"input_shape": shape, "nb_classes": nb_classes, **given}
    params = [p for p in sig.parameters.values()]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    accepted = list(named)
    for key in given:
        if key in CLASS_KEYWORDS and (key in named or var_kw):
            raise ScenarioError(f"arch_params sets '{key}', but the number of classes is the victim's "
                                f"(victim.nb_classes, or the training labels); remove it.",
                                path=f"{section}.arch_params.{key}")
        if key not in named and not var_kw:
            accepts = f"it accepts: {', '.join(accepted)}" if accepted else "it accepts no keywords"
            raise ScenarioError(f"{label} does not accept the keyword '{key}' given in arch_params."
                                f"{did_you_mean(key, accepted)} {accepts[0].upper() + accepts[1:]}.",
                                path=f"{section}.arch_params.{key}")
    kw: dict[str, Any] = {}

    def offer(names: tuple[str, ...], value: Any, fallback: str | None) -> None:
        hits = [n for n in names if n in named and n not in given]
        if hits:
            kw[hits[0]] = value
        elif fallback and var_kw and not any(n in given for n in names):
            kw[fallback] = value

    if nb_classes is not None:
        offer(CLASS_KEYWORDS, nb_classes, "nb_classes")
    offer(SHAPE_KEYWORDS, shape, "input_shape")
    if len(shape) == 3:
        offer(CHANNEL_KEYWORDS, shape[0], None)
    if len(shape) == 1:
        offer(FEATURE_KEYWORDS, shape[0], None)
    kw.update(given)
    for p in params:
        if p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind == p.POSITIONAL_ONLY or p.name not in kw:
            what = "a positional-only parameter" if p.kind == p.POSITIONAL_ONLY else "a required parameter"
            raise ScenarioError(
                f"{label} has {what} '{p.name}' that stealcheck cannot provide. It passes the number of classes as "
                f"one of {', '.join(CLASS_KEYWORDS)}, the input as {', '.join(SHAPE_KEYWORDS)} (a tuple), "
                f"{', '.join(CHANNEL_KEYWORDS[:2])} (images) or {', '.join(FEATURE_KEYWORDS[:2])} (vectors), "
                f"and everything in {section}.arch_params by name; give '{p.name}' a default or set it in "
                "arch_params.", path=f"{section}.architecture")
    return kw
