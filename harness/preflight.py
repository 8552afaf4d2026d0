"""Cheap checks of everything a scenario refers to, before anything is trained.

:func:`check_inputs` is what ``stealcheck validate`` adds to the schema checks (and what ``run``
calls before it makes the run folder): it opens every referenced file cheaply, imports user
architecture modules and checks their signatures, and compares the declared input shape and
number of classes with the data. Every problem is a :class:`~stealcheck.errors.ScenarioError`
carrying the key path of the scenario key at fault.

It stays light: for built-in architectures and built-in data it imports neither torch, ART,
scikit-learn, pandas nor scipy. torch is imported only to read a ``weights`` file (to compare its
keys and shapes with the architecture's), scikit-learn only to check non-empty ``model_params``,
and a user architecture's module is imported (which may import what it likes).

Data sources take part through their registration: a source registered with
``inspect=fn`` gets ``fn(params, ctx, path) -> DataFacts`` called, where ``ctx`` is the
:class:`~stealcheck.datasets.DataContext` the run would pass and ``path`` the data set's key path
(``data.ROLE``). It checks its files and returns what it learnt cheaply (sizes, feature shape,
labels), or raises ScenarioError. The helpers below (:func:`regular_file`, :func:`folder`) give
every source the same messages.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import registry
from .datasets import DataContext, scenario_path
from .errors import ScenarioError, did_you_mean, shorten
from .scenario import Scenario, check_pool_size


@dataclass(frozen=True)
class DataFacts:
    """What a data source's ``inspect`` learnt about one data set without loading it."""

    n: int | None = None  #: samples this data set gets (after split and limit); None = unknown
    n_classes: int | None = None  #: distinct labels; None = unknown or unlabelled
    max_label: int | None = None  #: the largest label when labels are integers used as given (else None)
    description: str = ""  #: how messages name the source, e.g. "sklearn 'wine'"


# ---------------------------------------------------------------- files


def _stat(path: Path, what: str, key: str | None, given: str) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        parent = path.parent
        hint = "" if parent.is_dir() else f" (the folder {parent} does not exist either)"
        rel = "" if Path(given).expanduser().is_absolute() else " (relative paths are taken from the scenario file's folder)"
        raise ScenarioError(f"{what} not found: {path}{hint}{rel}.", path=key) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read {what} {path}: {exc.strerror or exc}.", path=key) from None


def regular_file(given: str, base_dir: str | Path, what: str, key: str | None) -> Path:
    """``given`` resolved as the run resolves it; it must be a readable, non-empty regular file."""
    path = scenario_path(given, base_dir)
    st = _stat(path, what, key, given)
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError(f"{what} {path} is a folder; a file is expected here.", path=key)
    if not stat.S_ISREG(st.st_mode):
        raise ScenarioError(f"{what} {path} is not a regular file (a device, pipe or socket); give a file.", path=key)
    if st.st_size == 0:
        raise ScenarioError(f"{what} {path} is empty.", path=key)
    if not os.access(path, os.R_OK):
        raise ScenarioError(f"{what} {path} is not readable (permissions).", path=key)
    return path


def folder(given: str, base_dir: str | Path, what: str, key: str | None) -> Path:
    """``given`` resolved as the run resolves it; it must be an existing, readable folder."""
    path = scenario_path(given, base_dir)
    st = _stat(path, what, key, given)
    if not stat.S_ISDIR(st.st_mode):
        raise ScenarioError(f"{what} {path} is a file; a folder is expected here.", path=key)
    if not os.access(path, os.R_OK | os.X_OK):
        raise ScenarioError(f"{what} {path} is not readable (permissions).", path=key)
    return path


# ---------------------------------------------------------------- the checks


def check_inputs(scenario: Scenario) -> None:
    """Check everything ``run`` would reject before training; raise ScenarioError with the key path."""
    base_dir = scenario.base_dir
    facts = _check_data(scenario, base_dir)
    params = scenario.victim.params
    if hasattr(params, "architecture"):
        _check_torch_victim(scenario, params, base_dir, facts)
    if hasattr(params, "trust_pickle"):
        _check_sklearn_victim(params, base_dir, facts)
    _check_thief(scenario, base_dir, facts)


def _data_context(scenario: Scenario, base_dir: Path) -> DataContext | None:
    spec = getattr(scenario.victim.params, "input", None)
    if spec is None:
        return None
    return DataContext(tuple(spec.shape), tuple(spec.range), scenario.model.data_seed, str(base_dir))


def _check_data(scenario: Scenario, base_dir: Path) -> dict[str, DataFacts]:
    ctx = _data_context(scenario, base_dir)
    found: dict[str, DataFacts] = {}
    if ctx is None:
        return found
    for role, ref in scenario.data.items():
        info = registry.data_sources.get(ref.source)
        inspect = info.caps.inspect
        if not callable(inspect):
            continue
        facts = inspect(ref.params, ctx, f"data.{role}")
        if facts is None:
            continue
        if facts.n == 0:
            raise ScenarioError(f"data set '{role}' ({facts.description or ref.source}) holds no samples"
                                f"{' after its split and limit' if getattr(ref.params, 'split', 'all') != 'all' else ''}.",
                                path=f"data.{role}")
        found[role] = facts
    _check_pool(scenario, found)
    return found


def _check_pool(scenario: Scenario, facts: dict[str, DataFacts]) -> None:
    """The attacker's pool holds at least the largest budget (check_scenario does it for sources of static size)."""
    pool = facts.get("attacker")
    if pool is None or pool.n is None:
        return
    if registry.data_sources.get(scenario.data["attacker"].source).caps.static_size is None:
        check_pool_size(scenario, pool.n, f"({pool.description})")


def _check_labels(nb_classes: int, facts: dict[str, DataFacts]) -> None:
    for role in ("victim_train", "test"):
        f = facts.get(role)
        if f is None:
            continue
        if f.max_label is not None and f.max_label >= nb_classes:
            raise ScenarioError(f"victim.nb_classes is {nb_classes}, but the labels of data.{role} ({f.description}) "
                                f"go up to {f.max_label} ({f.n_classes} distinct); labels must lie in "
                                f"0..{nb_classes - 1}. Set nb_classes: {f.max_label + 1} or leave it out.",
                                path="victim.nb_classes")
        if f.n_classes is not None and f.n_classes > nb_classes:
            raise ScenarioError(f"victim.nb_classes is {nb_classes}, but data.{role} ({f.description}) has "
                                f"{f.n_classes} distinct labels.", path="victim.nb_classes")


# ---------------------------------------------------------------- architectures


def check_architecture(architecture: str, arch_params: dict[str, Any] | None, input_shape: tuple[int, ...],
                       nb_classes: int | None, base_dir: Path, section: str) -> None:
    """Check an architecture and its arch_params without building it (and, for built-ins, without torch)."""
    from stealcheck.adapters import architectures as arch

    where = f"{section}.architecture"
    if architecture in arch.BUILTIN_ARCHITECTURES:
        arch.check_builtin(architecture, arch_params, input_shape, section)
        return
    for prefix, package in (("timm:", "timm"), ("torchvision:", "torchvision")):
        if architecture.startswith(prefix):
            if not architecture[len(prefix):]:
                raise ScenarioError(f"'{architecture}' names no model; write {prefix}NAME.", path=where)
            if importlib.util.find_spec(package) is None:
                raise ScenarioError(f"architecture '{architecture}' needs the package '{package}', which is not "
                                    "installed.", path=where)
            return  # the model name is checked when the run builds it (listing models imports torch)
    if ":" in architecture:
        fn = arch.load_user_callable(architecture, base_dir, where)
        arch.call_keywords(fn, architecture, input_shape, nb_classes if nb_classes is not None else 2, arch_params,
                           section)
        return
    raise arch.unknown_architecture(architecture, where)


def _check_torch_victim(scenario: Scenario, p: Any, base_dir: Path, facts: dict[str, DataFacts]) -> None:
    shape = tuple(p.input.shape)
    check_architecture(p.architecture, p.arch_params, shape, p.nb_classes, base_dir, "victim")
    if p.nb_classes is not None:
        _check_labels(p.nb_classes, facts)
    if getattr(p, "weights", None) is None:
        return
    path = regular_file(p.weights, base_dir, "weights file", "victim.weights")
    if p.nb_classes is None:
        raise ScenarioError("nb_classes is required when weights are given (the network's output size).",
                            path="victim.nb_classes")
    check_state_dict(path, p.architecture, shape, p.nb_classes, p.arch_params, base_dir)


def check_state_dict(path: Path, architecture: str, input_shape: tuple[int, ...], nb_classes: int,
                     arch_params: dict[str, Any], base_dir: Path) -> None:
    """``path`` loads with ``torch.load(weights_only=True)`` and fits the architecture's keys and shapes."""
    import torch

    from stealcheck.adapters.networks import build_network

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ScenarioError(f"{path} is not a state_dict readable with torch.load(weights_only=True): "
                            f"{type(exc).__name__}: {shorten(str(exc).splitlines()[0] if str(exc) else '', 200)}. "
                            "Save the weights with torch.save(model.state_dict(), path).",
                            path="victim.weights") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ScenarioError(f"{path} holds a {type(state).__name__}, not a state_dict (a mapping of parameter names "
                            "to tensors); save it with torch.save(model.state_dict(), path).", path="victim.weights")
    net = build_network(architecture, input_shape, nb_classes, arch_params, base_dir=base_dir, section="victim")
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {list(given.get(k, ()))} vs network {list(expected[k])}"
                  for k in expected if k in given and given[k] != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:5])}"
                        f"{', ...' if len(unexpected) > 5 else ''}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:5])}"
                        f"{'; ...' if len(mismatched) > 5 else ''}")
    if problems:
        desc = architecture + (f" {arch_params}" if arch_params else "")
        raise ScenarioError(f"the state_dict in {path} does not fit {desc} with input {list(input_shape)} and "
                            f"nb_classes {nb_classes}: " + "; ".join(problems) + ".", path="victim.weights")


def _thief_default(scenario: Scenario) -> tuple[str, dict[str, Any]] | None:
    """The architecture a thief gets when the scenario names none: the victim kind's declared
    ``thief_architecture`` capability (None for a victim kind that declares none)."""
    default = registry.victims.get(scenario.victim.kind).caps.thief_architecture
    if not callable(default):
        return None
    arch, params = default(scenario.victim.params)
    return arch, dict(params)


def _check_thief(scenario: Scenario, base_dir: Path, facts: dict[str, DataFacts]) -> None:
    spec = getattr(scenario.victim.params, "input", None)
    if spec is None:
        return
    t = scenario.model.thief
    default = _thief_default(scenario)
    if default is None and t.architecture is None:
        return  # only the victim adapter knows its thief, at run time
    default_arch, default_params = default or (None, {})
    arch = t.architecture or default_arch
    if t.arch_params is not None:
        params = t.arch_params
    else:
        params = default_params if t.architecture in (None, default_arch) else {}
    if (arch, params) == (getattr(scenario.victim.params, "architecture", None),
                          getattr(scenario.victim.params, "arch_params", None)):
        return  # the victim's own architecture, checked already
    nb = getattr(scenario.victim.params, "nb_classes", None)
    if nb is None:
        nb = next((f.n_classes for f in facts.values() if f.n_classes), None)
    check_architecture(arch, params, tuple(spec.shape), nb, base_dir, "thief")


# ---------------------------------------------------------------- scikit-learn victims

# model -> (module, estimator class) whose keyword arguments model_params may set.
SKLEARN_ESTIMATORS = {
    "logistic_regression": ("sklearn.linear_model", "LogisticRegression"),
    "logistic_regression_ovr": ("sklearn.linear_model", "LogisticRegression"),
    "mlp": ("sklearn.neural_network", "MLPClassifier"),
    "decision_tree": ("sklearn.tree", "DecisionTreeClassifier"),
    "random_forest": ("sklearn.ensemble", "RandomForestClassifier"),
    "svc": ("sklearn.svm", "SVC"),
}


def _check_sklearn_victim(p: Any, base_dir: Path, facts: dict[str, DataFacts]) -> None:
    if p.path is not None:
        path = regular_file(p.path, base_dir, "model file", "victim.path")
        if not p.trust_pickle:
            raise ScenarioError(
                f"victim.path names a pickle/joblib file ({path}), and loading one runs code from the file. "
                "stealcheck loads it only with trust_pickle: true; set that only if you trust where the file came "
                "from.", path="victim.trust_pickle")
        return  # not unpickled here: that would run the file's code at validate
    if p.model_params:
        check_model_params(p.model, p.model_params)
    # A trained estimator's classes are the training labels it saw, and its probability columns
    # follow them: they must be 0..k-1 for column c to mean label c.
    train = facts.get("victim_train")
    if train is not None and train.max_label is not None and train.n_classes is not None:
        if train.max_label + 1 != train.n_classes:
            raise ScenarioError(f"data.victim_train ({train.description}) has {train.n_classes} distinct labels going "
                                f"up to {train.max_label}; a scikit-learn victim trained here needs labels 0.."
                                f"{train.n_classes - 1} (its probability column c is label c). Renumber the labels "
                                "in the file.", path="data.victim_train")
        _check_labels(train.n_classes, facts)


def check_model_params(model: str, params: dict[str, Any]) -> None:
    """model_params names keyword arguments of the estimator, with values its constraints allow (imports scikit-learn)."""
    if model not in SKLEARN_ESTIMATORS:
        return
    module, name = SKLEARN_ESTIMATORS[model]
    cls = getattr(importlib.import_module(module), name)
    accepted = sorted(cls().get_params(deep=False))
    if model == "svc" and params.get("probability") is False:
        raise ScenarioError("model svc needs probability: true (stealcheck serves probabilities, which SVC gives "
                            "only then); remove probability from model_params.", path="victim.model_params.probability")
    for key in params:
        if key not in accepted:
            raise ScenarioError(f"{name} (model: {model}) has no parameter '{key}'.{did_you_mean(key, accepted)} "
                                f"Accepted: {', '.join(accepted)}.", path=f"victim.model_params.{key}")
    constraints = getattr(cls, "_parameter_constraints", None)
    if not isinstance(constraints, dict):
        return
    try:
        from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints
    except ImportError:  # a private helper; without it the values are checked when the run fits the model
        return
    for key, value in params.items():
        try:
            validate_parameter_constraints({key: constraints[key]} if key in constraints else {}, {key: value},
                                           caller_name=name)
        except InvalidParameterError as exc:
            raise ScenarioError(f"invalid model_params for {name}: {exc}", path=f"victim.model_params.{key}") from None
