"""Fuzzing `stealcheck validate`: no input may produce a traceback, a hang or an exit code other than 0 or 2.

The malformed scenarios are made from the shipped ones (scenarios/*.yaml):

- structural mutations of the parsed scenario: a wrong-typed value at any key path (int, float,
  str, list, mapping, null, bool, huge, NaN, inf, negative), an unknown key, a deleted key, a
  value moved from another key path;
- text mutations of the YAML itself (deleted or repeated characters and lines, YAML punctuation
  inserted, indentation changed);
- bad files (not UTF-8, empty, a directory, a FIFO, a device) and a deterministic list of the
  cases first contact found (issue 13, section 2).

Each case runs ``stealcheck validate`` in-process (``stealcheck.cli.main``) and asserts exit 0, or
exit 2 with a message on stderr; no exception may escape and no traceback may be printed.
The default run is bounded and deterministic (``derandomize``); ``-m slow`` runs ten times more.
"""

from __future__ import annotations

import copy
import math
import os
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stealcheck.cli import main

#: The shipped scenarios but those with a remote victim: validating one contacts its endpoint (a mutation could
#: point it anywhere); test_shipped_scenarios validates remote_quickstart against a served stand-in.
SHIPPED: dict[str, str] = {
    p.name[:-5]: p.read_text(encoding="utf-8")
    for p in sorted(resources.files("stealcheck.scenarios").iterdir(), key=lambda p: p.name)
    if p.name.endswith(".yaml") and (yaml.safe_load(p.read_text(encoding="utf-8")).get("victim") or {}).get("kind")
    != "remote"
}
PARSED: dict[str, Any] = {name: yaml.safe_load(text) for name, text in SHIPPED.items()}

def validate(path: Path | str, capsys) -> tuple[int, str]:
    """Run `stealcheck validate PATH` in-process; assert it ended as the contract says; return (code, stderr)."""
    capsys.readouterr()
    code = main(["validate", str(path)])  # an exception escaping here is a failure
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert code in (0, 2), (code, out.err[-2000:])
    if code == 2:
        assert out.err.startswith("stealcheck: error: ") and len(out.err.strip()) > len("stealcheck: error:")
    return code, out.err


# ---------------------------------------------------------------- structural mutations


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a parsed document (mapping keys and list indexes), deepest last."""
    out = []
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for key, value in items:
        out.append(prefix + (key,))
        out.extend(key_paths(value, prefix + (key,)))
    return out


PATHS: dict[str, list[tuple]] = {name: key_paths(data) for name, data in PARSED.items()}


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


ALL_VALUES: list[Any] = [_get(PARSED[name], p) for name in PARSED for p in PATHS[name]]

HUGE = "x" * 100_000
BAD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, -10**9, 10**9, 2**31, 2**32, 2**63, 10**40, -(2**64)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 0.5, -0.5]),
    st.text(max_size=12),
    st.sampled_from(["", " ", HUGE, "none", "null", "-1", "nan", ".inf", "a:b", "x.y:z", "../nope.npz",
                     "/dev/null", "/", "~", "%", "*", "{", "[", "timm:", "torchvision:", "none:x=1"]),
)
BAD_VALUES = st.one_of(
    BAD_SCALARS,
    st.lists(BAD_SCALARS, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-3, 3)), BAD_SCALARS, max_size=3),
    st.sampled_from([[], {}, [[]], [{}], [None], {"": None}, list(range(2000)), [HUGE]]),
    st.sampled_from(ALL_VALUES),  # a real value from somewhere else: the plausible mix-up
)
# `plugins:` entries are imported: only names that cannot import anything with side effects.
PLUGIN_VALUES = st.sampled_from(["", ".relative", "..", "a b", "no_such_module_xyz", "stealcheck.no_such_module",
                                 "os.path:join", "1abc", 5, None, True, 1.5, [], {}, [""], [".x", None], {"a": 1},
                                 ["no_such_module_xyz"], HUGE])
# Keys to add: misspellings, and real keys in the wrong place or absent from the seeds (a section
# such as `plugins:` or `detection:` that no shipped scenario sets is only reached this way).
KEY_NAMES = st.one_of(
    st.text(min_size=1, max_size=10),
    st.sampled_from(["nme", "budget", "attack", "victm", "arch", "<<", "null", "5", HUGE[:300]]),
    st.sampled_from(["plugins", "description", "data_seed", "thief", "defences", "attacks", "budgets", "detectors",
                     "detection", "seeds", "evaluation", "expect", "output", "kind", "architecture", "arch_params",
                     "weights", "nb_classes", "input", "train", "cache", "top_k", "model", "model_params", "path",
                     "trust_pickle", "source", "split", "name", "plugin", "id", "params", "metric", "defence",
                     "detector", "budget", "min", "max", "shape", "range", "mean", "std", "dir", "cache_dir",
                     "uniform_samples", "test_limit", "benign", "outliers", "strategy", "use_probability"]),
    st.integers(-3, 10**6),
    st.sampled_from([None, True, False, 1.5]),
)


def _value_for(path: tuple, draw) -> Any:
    # A copy: ALL_VALUES holds the parsed seeds' own objects, which later mutations must not touch.
    return copy.deepcopy(draw(PLUGIN_VALUES if path and path[0] == "plugins" else BAD_VALUES))


@st.composite
def structural_mutation(draw) -> tuple[str, Any]:
    """(scenario name, mutated data): one to three mutations of one shipped scenario."""
    name = draw(st.sampled_from(sorted(PARSED)))
    data = copy.deepcopy(PARSED[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = key_paths(data)
        kind = draw(st.sampled_from(["replace", "replace", "replace", "unknown_key", "delete", "wrap"]))
        if kind == "unknown_key":
            mappings = [()] + [p for p in paths if isinstance(_get(data, p), dict)]
            path = draw(st.sampled_from(mappings))
            key = draw(KEY_NAMES)
            target = _get(data, path)
            try:
                target[key] = _value_for(path + (key,), draw)
            except TypeError:  # an unhashable drawn key: cannot happen with KEY_NAMES, kept for safety
                pass
            continue
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _get(data, path[:-1])
        if kind == "delete":
            del parent[path[-1]]
        elif kind == "wrap":  # the right value at the wrong depth
            parent[path[-1]] = draw(st.sampled_from([[parent[path[-1]]], {"x": parent[path[-1]]}]))
        else:
            parent[path[-1]] = _value_for(path, draw)
    return name, data


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


FUZZ_SETTINGS = dict(deadline=timedelta(seconds=10), derandomize=True, database=None, print_blob=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                            HealthCheck.data_too_large])


# ---------------------------------------------------------------- text mutations

SNIPPETS = ["\n", " ", "  ", "\t", ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "&a ", "*a", "*b ", "!!int ",
            "!!str ", "!!float ", "!!binary ", "!!python/object ", "? ", "|", ">", "'", '"', "#", "%YAML 1.1\n",
            "---\n", "...\n", "<<: ", "@", "`", "\\", "\x00", "\ufeff", "é", "\u2028", "0x", "1e9999", ".nan", "~"]


@st.composite
def text_mutation(draw) -> tuple[str, str]:
    """(scenario name, mutated YAML text): one to four edits of one shipped scenario's text."""
    name = draw(st.sampled_from(sorted(SHIPPED)))
    text = SHIPPED[name]
    for _ in range(draw(st.integers(1, 4))):
        lines = text.split("\n")
        kind = draw(st.sampled_from(["insert", "insert", "delete", "dup_line", "drop_line", "indent", "dedent"]))
        pos = draw(st.integers(0, max(len(text) - 1, 0)))
        line = draw(st.integers(0, max(len(lines) - 1, 0)))
        if kind == "insert":
            snippet = draw(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=4)))
            text = text[:pos] + snippet + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)):]
        elif kind == "dup_line":
            lines.insert(line, lines[line])
            text = "\n".join(lines)
        elif kind == "drop_line":
            del lines[line]
            text = "\n".join(lines)
        elif kind == "indent":
            lines[line] = "  " + lines[line]
            text = "\n".join(lines)
        else:
            lines[line] = lines[line][2:] if lines[line].startswith("  ") else lines[line].lstrip()
            text = "\n".join(lines)
    return name, text


def _fuzz_test(cases: st.SearchStrategy, max_examples: int, slow: bool = False):
    """A test that validates ``max_examples`` files drawn from ``cases`` ((scenario name, YAML text) pairs)."""

    @settings(max_examples=max_examples, **FUZZ_SETTINGS)
    @given(case=cases)
    def test(case, tmp_path, capsys):
        name, text = case
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        validate(path, capsys)

    return pytest.mark.slow(test) if slow else test


STRUCTURAL_TEXTS = structural_mutation().map(lambda case: (case[0], _dump(case[1])))
# The default run: 300 cases, a few seconds; `-m slow` runs 4,500.
test_fuzz_structural_mutations = _fuzz_test(STRUCTURAL_TEXTS, 200)
test_fuzz_text_mutations = _fuzz_test(text_mutation(), 100)
test_fuzz_structural_mutations_long = _fuzz_test(STRUCTURAL_TEXTS, 3000, slow=True)
test_fuzz_text_mutations_long = _fuzz_test(text_mutation(), 1500, slow=True)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_scenarios_validate(name, tmp_path, capsys):
    """The unmutated seeds of the fuzzing are valid (else every mutation would test the same error)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(SHIPPED[name], encoding="utf-8")
    assert validate(path, capsys)[0] == 0


# ---------------------------------------------------------------- bad files


def _alias_bomb(levels: int = 8) -> str:
    lines = ["a0: &a0 [lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


BAD_FILES: dict[str, bytes] = {
    "empty": b"",
    "only a comment": b"# nothing\n",
    "latin-1": SHIPPED["quickstart"].replace("digit", "d\xedgit").encode("latin-1"),
    "utf-16": SHIPPED["quickstart"].encode("utf-16"),
    "binary": bytes(range(256)) * 4,
    "nul bytes": b"name: x\x00\n",
    "a list": b"- a\n- b\n",
    "a scalar": b"quickstart\n",
    "two documents": b"name: a\n---\nname: b\n",
    "alias bomb": _alias_bomb().encode(),
    "recursive alias": b"name: x\ndescription: &r [*r]\n",
    "deep nesting": b"name: " + b"[" * 3000 + b"]" * 3000 + b"\n",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_exit_2(case, tmp_path, capsys):
    path = tmp_path / "scenario.yaml"
    path.write_bytes(BAD_FILES[case])
    assert validate(path, capsys)[0] == 2


def test_directory_missing_file_and_devices_exit_2(tmp_path, capsys):
    assert validate(tmp_path, capsys)[0] == 2
    assert validate(tmp_path / "missing.yaml", capsys)[0] == 2
    if os.path.exists("/dev/null"):
        assert validate("/dev/null", capsys)[0] == 2
    if hasattr(os, "mkfifo"):  # opened, a FIFO would block forever: refused before opening
        fifo = tmp_path / "pipe.yaml"
        os.mkfifo(fifo)
        code, err = validate(fifo, capsys)
        assert code == 2 and "FIFO" in err


ODD_NAMES: dict[str, str] = {
    "symlink loop": "loop.yaml",
    "name too long": "x" * 5000,
    "name too long, .yaml": "x" * 5000 + ".yaml",
    "NUL in the name": "a\x00.yaml",
    "empty name": "",
}


@pytest.mark.parametrize("case", list(ODD_NAMES))
def test_odd_scenario_names_exit_2(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    assert validate(ODD_NAMES[case], capsys)[0] == 2


# ---------------------------------------------------------------- the cases first contact found


def _quickstart_with(edit) -> str:
    data = copy.deepcopy(PARSED["quickstart"])
    edit(data)
    return _dump(data)


def _set(path: tuple, value: Any):
    def edit(data):
        _get(data, path[:-1])[path[-1]] = value
    return edit


# name -> (YAML text, substrings the error message must contain). Each must exit 2.
SPECIFIC_CASES: dict[str, tuple[str, list[str]]] = {
    "complex key": ("name: x\n? [a, b]\n: 1\n", ["a key must be a plain name", ":2"]),
    "bad !!int tag": (SHIPPED["quickstart"].replace("seeds: [0]", "seeds: !!int abc"), ["'abc'", "!!int"]),
    "bad timestamp": (SHIPPED["quickstart"].replace("seeds: [0]", "seeds: 2020-13-45"), ["2020-13-45"]),
    "rounded: 0": (_quickstart_with(_set(("defences", 1), {"rounded": 0})), ["'rounded'", "mapping", "got 0"]),
    "rounded: ''": (_quickstart_with(_set(("defences", 1), {"rounded": ""})), ["'rounded'", "mapping"]),
    "knockoff: 0": (_quickstart_with(_set(("attacks", 0), {"knockoff": 0})), ["'knockoff'", "mapping"]),
    "long form params: 0": (_quickstart_with(_set(("attacks", 2), {"plugin": "copycat", "params": 0})),
                            ["'params'", "mapping"]),
    "id is a mapping": (_quickstart_with(_set(("attacks", 2), {"plugin": "copycat", "id": {"a": 1}})),
                        ["'id' must be a name", "attacks.2.id"]),
    "id is a number next to a gate": (_quickstart_with(_set(("defences", 2), {"plugin": "reverse_sigmoid", "id": 5})),
                                      ["'id' must be a name", "got 5"]),
    "plugin is a number": (_quickstart_with(_set(("attacks", 2), {"plugin": 5})), ["'plugin' must be a name"]),
    "plugin name is a number": (_quickstart_with(_set(("attacks", 2), {5: None})), ["plugin name must be a string"]),
    "victim.arch": (_quickstart_with(lambda d: d["victim"].update(arch="mlp")),
                    ["unknown key 'arch'", "Did you mean 'architecture'?"]),
    "numeric victim key": (_quickstart_with(lambda d: d["victim"].update({5: "x"})), ["key 5", "victim.5"]),
    "numeric thief key": (_quickstart_with(lambda d: d["thief"].update({5: 1})), ["key 5", "thief.5", "a name"]),
    "null output key": (_quickstart_with(_set(("output",), {None: 1})), ["key null must", "output.None", "a name"]),
    "huge value": (_quickstart_with(_set(("thief", "epochs"), "x" * 100_000)), ["characters)"]),
    "huge budgets": (_quickstart_with(_set(("budgets",), [-1] * 20_000)), ["budgets"]),
    "plugins ''": (_quickstart_with(_set(("plugins",), [""])), ["plugins"]),
    "plugins .relative": (_quickstart_with(_set(("plugins",), [".relative"])), ["plugins"]),
}
@pytest.mark.parametrize("case", list(SPECIFIC_CASES))
def test_specific_cases_exit_2_with_a_message(case, tmp_path, capsys):
    text, needles = SPECIFIC_CASES[case]
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    code, err = validate(path, capsys)
    assert code == 2
    for needle in needles:
        assert needle in err, (needle, err)
    assert len(err) < 3000  # values are quoted cut, never in full


def test_multi_error_message_keeps_each_key_path(tmp_path, capsys):
    """pydantic's later problems keep their own key paths (a loop once overwrote the prefix)."""
    path = tmp_path / "scenario.yaml"
    path.write_text(_quickstart_with(lambda d: d["thief"].update(epochs="a", min_steps="b", lr="c")), encoding="utf-8")
    code, err = validate(path, capsys)
    assert code == 2
    assert "at 'thief.epochs'" in err and "thief.min_steps:" in err and "thief.lr:" in err
    assert ".;" not in err


def test_numeric_yaml_key_points_at_its_line(tmp_path, capsys):
    """A YAML key 5 is the key path part '5' and gets its own line, like a list index does."""
    text = SHIPPED["quickstart"].replace("  output: probabilities\n", "  output: probabilities\n  5: x\n")
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    code, err = validate(path, capsys)
    line = text.split("\n").index("  5: x") + 1
    assert code == 2 and f"{path}:{line} at 'victim.5'" in err
