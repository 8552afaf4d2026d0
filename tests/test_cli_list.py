"""`stealcheck list` and scenario names: readable for a newcomer, forgiving with spellings."""

from __future__ import annotations

import pytest

from stealcheck.cli import main


def _run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("kind, first_line", [("attack", "attacks:"), ("attacks", "attacks:"),
                                              ("defence", "defences:"), ("defense", "defences:"),
                                              ("detector", "detectors:"), ("metric", "metrics:")])
def test_list_accepts_singular_and_plural(kind, first_line, capsys):
    code, out, _ = _run(["list", kind], capsys)
    assert code == 0 and out.splitlines()[0] == first_line


def test_list_scenarios(capsys):
    code, out, _ = _run(["list", "scenarios"], capsys)
    assert code == 0
    assert "quickstart" in out and "attacks:" not in out


def test_list_unknown_kind_is_exit_2_with_the_allowed_kinds(capsys):
    code, _, err = _run(["list", "atacks"], capsys)
    assert code == 2
    assert "Did you mean 'attacks'?" in err and "scenarios" in err and "Traceback" not in err


def test_list_shows_no_reprs_or_internal_names(capsys):
    code, out, _ = _run(["list"], capsys)
    assert code == 0
    for leak in ("Params(", "ctx.", "BeforeValidator", "<function", "Annotated[", "threshold_"):
        assert leak not in out, leak
    # A nested params model is shown by what differs from its own defaults.
    assert "mae: mapping = {patch_size: 7} (other keys at their defaults)" in " ".join(out.split())


def test_list_descriptions_are_whole_sentences(capsys):
    """Each plugin's description ends where its sentence ends (it used to be cut at the first line)."""
    from stealcheck import registry

    for reg in (registry.attacks, registry.defences, registry.detectors, registry.victims):
        for info in reg.items():
            assert info.description.endswith((".", ")")), (info.name, info.description)


def test_a_misspelt_shipped_scenario_gets_a_suggestion(capsys):
    for command in ("run", "validate"):
        code, _, err = _run([command, "quickstrat"], capsys)
        assert code == 2
        assert "Did you mean 'quickstart'?" in err and "Traceback" not in err
