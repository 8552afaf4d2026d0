"""YAML reading that refuses duplicate keys and remembers the line of every key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ScenarioError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that raises on duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ScenarioError(
                f"duplicate key '{key}' (first defined on line {seen[key]}). Each key may appear once.",
                where=f"{loader.name}:{line}",
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)
    return out


def load_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Read a YAML file; return (data, {key path: line number}).

    Raises ScenarioError for a missing file, a syntax error (with its line) or a duplicate key.
    """
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"file not found: {path}")
    if path.is_dir():
        raise ScenarioError(f"{path} is a directory; expected a scenario YAML file")
    text = path.read_text(encoding="utf-8")
    name = str(path)
    try:
        loader = _StrictLoader(text)
        loader.name = name
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        raise ScenarioError(f"invalid YAML: {exc.problem or exc}", where=where) from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"invalid YAML: {exc}", where=name) from exc
    lines = _line_map(node) if node is not None else {}
    return data, lines
