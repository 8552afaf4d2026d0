"""YAML reading that refuses duplicate keys and remembers the line of every key path.

A scenario file is user input, so every way YAML can misbehave ends in a ScenarioError that
names the file and, when known, the line: a file that is not a regular file (a FIFO would block
forever, a device never ends), is too large, or is not UTF-8; aliases that expand into a huge or
recursive structure (an "alias bomb" costs seconds and gigabytes long before any check runs);
nesting deep enough to exhaust Python's stack; complex keys; and tagged values that do not
construct (``!!int abc``).
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import ScenarioError, short_repr

# A scenario is a few kilobytes; PyYAML's pure-Python loader (needed for the checks below) reads
# about 150 KB a second, so this bound keeps a wrong file from looking like a hang.
MAX_BYTES = 1_000_000
# Nodes that aliases may add to the document once expanded. Validation walks the expanded
# structure (pydantic copies every alias), so this bounds its cost; real scenarios add a few dozen.
MAX_ALIAS_NODES = 100_000
# Nesting depth of collections: composing, constructing and validating recurse once per level.
MAX_DEPTH = 100


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with the checks a scenario file needs.

    While composing it counts the nodes each alias adds once expanded and refuses recursive
    aliases and excessive nesting; while constructing it refuses duplicate and complex keys and
    turns a tagged value that does not construct into a ScenarioError with its line.
    """

    def __init__(self, stream: str, name: str):
        super().__init__(stream)
        self.name = name
        self._sizes: dict[int, int] = {}  # id(node) -> nodes in its full expansion, once composed
        self._alias_nodes = 0
        self._depth = 0

    def _where(self, node_or_mark: Any) -> str:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        return f"{self.name}:{mark.line + 1}"

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:  # its anchor is still being composed: the alias is inside its own anchor
                raise ScenarioError(f"the alias *{event.anchor} refers to a node that contains it (a recursive "
                                    "structure); a scenario must be a tree.", where=self._where(event.start_mark))
            self._alias_nodes += size
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise ScenarioError(f"the YAML's aliases expand to more than {MAX_ALIAS_NODES:,} nodes; a scenario "
                                    "needs far fewer. Write the repeated parts out, or repeat less.",
                                    where=self._where(event.start_mark))
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ScenarioError(f"the YAML nests more than {MAX_DEPTH} levels deep.",
                                where=self._where(self.peek_event().start_mark))
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, ArithmeticError, LookupError) as exc:
            # SafeConstructor's scalar constructors call int(), float(), datetime() ... unguarded.
            value = node.value if isinstance(node, yaml.ScalarNode) else "..."
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise ScenarioError(f"the value {short_repr(value)} is not a valid {tag}: {exc}.",
                                where=self._where(node)) from None


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """Construct a mapping, refusing complex keys and duplicate keys (with both lines).

    Keys brought in by a merge (``<<: *base``) may be overridden, as YAML intends; the
    mapping's own keys are checked before the merge is flattened into them.
    """
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
            raise ScenarioError(f"a key must be a plain name, not a {kind} (a complex key such as '? [a, b]').",
                                where=f"{loader.name}:{line}")
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ScenarioError(
                f"duplicate key '{key}' (first defined on line {seen[key]}). Each key may appear once.",
                where=f"{loader.name}:{line}",
            )
        seen[key] = line
    loader.flatten_mapping(node)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(root: yaml.Node, loader: _StrictLoader) -> dict[tuple[str, ...], int]:
    """{key path: line} for every key path of the document as written.

    A path's parts are strings, as in error key paths: ``str()`` of a mapping's key as
    constructed (YAML's ``5`` and ``'5'`` both give ``'5'``) and a list's index. A node
    reached again through an alias is not entered again: the alias's own path gets a
    line (its key's; for a list item, the line where the repeated node is written) and deeper
    errors fall back to it, so the cost is one visit per node written.
    """
    out: dict[tuple[str, ...], int] = {(): root.start_mark.line + 1}
    visited = {id(root)}
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            children = [(str(loader.construct_object(k)), k, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            children = [(str(i), item, item) for i, item in enumerate(node.value)]
        else:
            continue
        for part, key_node, value_node in children:
            child = path + (part,)
            out.setdefault(child, key_node.start_mark.line + 1)
            if id(value_node) not in visited:
                visited.add(id(value_node))
                stack.append((value_node, child))
    return out


def _read_text(path: Path) -> str:
    """The file's text, refusing what is not a regular, reasonably small, UTF-8 file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ScenarioError(f"file not found: {path}") from None
    except OSError as exc:  # e.g. a symlink loop, a name too long
        raise ScenarioError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:  # os.stat refuses a NUL character in the name
        raise ScenarioError(f"cannot read {str(path)!r}: a file name cannot contain a NUL character") from None
    if stat.S_ISDIR(info.st_mode):
        raise ScenarioError(f"{path} is a directory; expected a scenario YAML file")
    if not stat.S_ISREG(info.st_mode):
        # Checked before opening: opening a FIFO blocks until a writer comes, a device may never end.
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else
                "a character device" if stat.S_ISCHR(info.st_mode) else
                "a block device" if stat.S_ISBLK(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
        raise ScenarioError(f"{path} is {kind}; expected a scenario YAML file (a regular file)")
    if info.st_size > MAX_BYTES:
        raise ScenarioError(f"{path} holds {info.st_size:,} bytes; a scenario file may hold at most "
                            f"{MAX_BYTES:,}. Is this the right file?")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)  # the file may have grown since stat
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise ScenarioError(f"{path} holds more than {MAX_BYTES:,} bytes; is this the right file?")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ScenarioError(f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8.")
    try:
        return raw.decode("utf-8-sig")  # an optional UTF-8 byte-order mark is dropped
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ScenarioError(f"the file is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                            "cannot be decoded. Save it as UTF-8.", where=f"{path}:{line}") from None


def load_yaml(path: str | Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Read a YAML file; return (data, {key path: line number}), key path parts being strings.

    Raises ScenarioError for anything that is not a readable, well-formed, bounded YAML
    document: see the module docstring.
    """
    path = Path(path)
    text = _read_text(path)
    name = str(path)
    loader = None
    try:
        loader = _StrictLoader(text, name)  # its reader checks every character here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
        return data, _line_map(node, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        raise ScenarioError(f"invalid YAML: {exc.problem or exc}", where=where) from None
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        raise ScenarioError(f"invalid YAML: the control character U+{exc.character:04X} is not allowed in a YAML "
                            "file.", where=f"{name}:{line}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"invalid YAML: {exc}", where=name) from None
    finally:
        if loader is not None:
            loader.dispose()
