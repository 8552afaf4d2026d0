"""YAML reading (stealcheck.yamlio) and the message helpers (stealcheck.errors).

Every malformed file ends in a ScenarioError naming the file (and the line when there is one),
quickly and in bounded memory: alias bombs, recursive aliases, files that are not UTF-8 or
not regular files, complex keys, tagged values that do not construct, deep nesting.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from stealcheck import yamlio
from stealcheck.errors import ScenarioError, did_you_mean, short_repr
from stealcheck.yamlio import load_yaml


def _write(tmp_path, content: str | bytes, name: str = "s.yaml"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _error(path) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_yaml(path)
    return info.value


def alias_bomb(levels: int = 8, fan_out: int = 10) -> str:
    """The 'billion laughs' of YAML: each level lists the previous one ``fan_out`` times."""
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan_out) + "]")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- aliases


def test_alias_bomb_is_refused_quickly(tmp_path):
    path = _write(tmp_path, alias_bomb())
    start = time.perf_counter()
    err = _error(path)
    assert time.perf_counter() - start < 2.0  # was 12.8 s and 2.2 GB
    assert f"aliases expand to more than {yamlio.MAX_ALIAS_NODES:,} nodes" in err.message
    assert err.where.startswith(f"{path}:")


def test_modest_aliases_and_merge_keys_still_work(tmp_path):
    text = ("base: &base {width: 8, depth: 2}\n"
            "a: *base\n"
            "b:\n"
            "  <<: *base\n"
            "  depth: 3\n"
            "list: &l [1, 2]\n"
            "again: [*l, *l]\n")
    data, lines = load_yaml(_write(tmp_path, text))
    assert data["a"] == {"width": 8, "depth": 2}
    assert data["b"] == {"width": 8, "depth": 3}
    assert data["again"] == [[1, 2], [1, 2]]
    # An alias's own path has a line (its key's, or a list item's anchor's); the paths inside the
    # node it repeats are not expanded.
    assert lines[("a",)] == 2 and lines[("again", "1")] == 6
    assert ("again", "1", "0") not in lines
    assert lines[("base", "width")] == 1


def test_line_map_visits_each_node_once(tmp_path):
    """Below the expansion bound, the line map still costs one visit per node written."""
    path = _write(tmp_path, alias_bomb(levels=5, fan_out=10))  # 11,111 nodes once expanded
    data, lines = load_yaml(path)
    assert len(data["a4"]) == 10
    assert len(lines) < 100


@pytest.mark.parametrize("text", ["description: &r [*r]\n", "a: &r {b: *r}\n", "a: &r {b: [1, {c: *r}]}\n"])
def test_recursive_alias_is_refused(tmp_path, text):
    err = _error(_write(tmp_path, text))
    assert "recursive" in err.message and "*r" in err.message
    assert err.where == f"{tmp_path / 's.yaml'}:1"


def test_deep_nesting_is_refused(tmp_path):
    err = _error(_write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert f"more than {yamlio.MAX_DEPTH} levels" in err.message


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("content, needles", [
    ("name: café\n".encode("latin-1"), ["not UTF-8", "byte 0xe9 at offset 9"]),
    (b"name: x\nvictim: \x80\x81\n", ["not UTF-8", "byte 0x80 at offset 16"]),
    ("name: x\n".encode("utf-16"), ["UTF-16", "save it as UTF-8"]),
    (bytes(range(256)), ["not UTF-8"]),
])
def test_file_that_is_not_utf8_is_refused_with_its_offset(tmp_path, content, needles):
    path = _write(tmp_path, content)
    err = _error(path)
    for needle in needles:
        assert needle in str(err)
    assert str(path) in str(err)


def test_non_utf8_error_names_the_line(tmp_path):
    path = _write(tmp_path, b"name: x\nvictim: \x80\n")
    assert _error(path).where == f"{path}:2"


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    data, _ = load_yaml(_write(tmp_path, "\ufeffname: x\n"))
    assert data == {"name": "x"}


def test_control_character_is_refused_with_its_line(tmp_path):
    path = _write(tmp_path, "name: x\ndescription: a\x00b\n")
    err = _error(path)
    assert "U+0000" in err.message and err.where == f"{path}:2"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    outcome = []

    def _load():
        try:
            load_yaml(fifo)
        except ScenarioError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=_load, daemon=True)  # a regression would block forever in open()
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "load_yaml blocked on a FIFO"
    assert outcome and "FIFO" in outcome[0].message


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_character_device_is_refused():
    assert "character device" in _error("/dev/null").message


def test_directory_missing_and_oversized_files_are_refused(tmp_path, monkeypatch):
    assert "is a directory" in _error(tmp_path).message
    assert "file not found" in _error(tmp_path / "nope.yaml").message
    monkeypatch.setattr(yamlio, "MAX_BYTES", 100)
    err = _error(_write(tmp_path, "description: " + "x" * 200 + "\n"))
    assert "at most 100" in err.message


def test_unreadable_names_are_refused(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(tmp_path / "loop.yaml")
    assert "cannot read" in _error(loop).message
    assert "cannot read" in _error(tmp_path / ("x" * 5000 + ".yaml")).message  # name too long
    assert "NUL" in _error(str(tmp_path / "a\x00.yaml")).message


def test_empty_file_is_none(tmp_path):
    assert load_yaml(_write(tmp_path, "")) == (None, {})


# ---------------------------------------------------------------- keys and tags


@pytest.mark.parametrize("text, line", [("name: x\n? [a, b]\n: 1\n", 2), ("name: x\nv: {[a]: 1}\n", 2),
                                        ("name: x\n? {a: 1}\n: 1\n", 2)])
def test_complex_keys_are_refused_with_their_line(tmp_path, text, line):
    path = _write(tmp_path, text)
    err = _error(path)
    assert "a key must be a plain name" in err.message
    assert err.where == f"{path}:{line}"


@pytest.mark.parametrize("text, needles", [
    ("name: x\nbudgets: !!int abc\n", ["'abc'", "!!int"]),
    ("name: x\nlr: !!float fast\n", ["'fast'", "!!float"]),
    ("name: x\nwhen: 2020-13-45\n", ["'2020-13-45'", "!!timestamp", "month"]),
    ("name: x\n!!int abc: 1\n", ["'abc'", "!!int"]),
])
def test_tagged_value_that_does_not_construct_is_refused_with_its_line(tmp_path, text, needles):
    path = _write(tmp_path, text)
    err = _error(path)
    for needle in needles:
        assert needle in err.message
    assert err.where == f"{path}:2"


def test_duplicate_keys_are_still_refused(tmp_path):
    err = _error(_write(tmp_path, "name: a\nbudgets: [1]\nname: b\n"))
    assert "duplicate key 'name' (first defined on line 1)" in err.message


def test_line_map_parts_are_strings_for_keys_and_indexes(tmp_path):
    """YAML's key 5, its key '5' and a list's index 5 are all the part '5', as in error key paths."""
    text = "victim:\n  kind: torch\n  5: x\n  1.5: y\nbudgets:\n- 1\n- 2\nd: {'7': z}\n"
    data, lines = load_yaml(_write(tmp_path, text))
    assert data["victim"][5] == "x"
    assert lines[("victim", "5")] == 3
    assert lines[("victim", "1.5")] == 4
    assert lines[("budgets", "1")] == 7
    assert lines[("d", "7")] == 8


# ---------------------------------------------------------------- message helpers


def test_short_repr_cuts_long_values_in_the_middle():
    assert short_repr("abc") == "'abc'"
    text = short_repr(list(range(100_000)))
    assert len(text) < 120
    assert text.startswith("[0, 1, 2") and text.endswith("characters)") and "99999" in text


def test_short_repr_survives_a_failing_repr():
    class Bad:
        def __repr__(self):
            raise RuntimeError("no")

    assert short_repr(Bad()) == "<Bad>"


def test_scenario_error_message_is_capped():
    err = ScenarioError("x" * 100_000, where="f.yaml:1", path="a.b")
    assert len(str(err)) < ScenarioError.MAX_MESSAGE + 100


@pytest.mark.parametrize("given, allowed, expected", [
    ("arch", ["kind", "architecture", "arch_params", "cache", "weights", "nb_classes"], "architecture"),
    ("stratgy", ["strategy", "reward"], "strategy"),
    ("budget", ["budgets", "seeds"], "budgets"),
    ("arch_p", ["architecture", "arch_params"], "arch_params"),
    (5, ["a", 3, "5x"], "5x"),  # mixed types: compared as text, no TypeError
    ("zzz", ["architecture"], None),
])
def test_did_you_mean_prefers_the_name_an_abbreviation_starts(given, allowed, expected):
    hint = did_you_mean(given, allowed)
    assert hint == (f" Did you mean '{expected}'?" if expected else "")
