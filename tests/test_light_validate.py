"""`validate` and `list` stay light: they never import torch, ART, scikit-learn or pandas.

Editors and pre-commit hooks call `stealcheck validate` on every save; importing torch and ART
made each call take 6-8 s and 700-800 MB. Declared plugins (``Registry.declare``) load their
implementation only when a run needs it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from stealcheck import registry

HEAVY = ("torch", "art", "sklearn", "scipy", "pandas", "matplotlib", "timm", "torchvision")

PROBE = """
import sys
from stealcheck.cli import main
code = main({argv!r})
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))
print("HEAVY:", ",".join(heavy))
sys.exit(code)
"""


def _heavy_imports(argv: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY:")][0]
    return [m for m in line[len("HEAVY:"):].strip().split(",") if m]


@pytest.mark.parametrize("scenario", ["quickstart", "same_mnist", "tramer_tabular", "tramer_tree", "ownership_mnist",
                                      "interactions_mnist"])
def test_validate_imports_no_heavy_module(scenario):
    assert _heavy_imports(["validate", scenario]) == []


def test_list_imports_no_heavy_module():
    assert _heavy_imports(["list"]) == []


def test_declared_capabilities_match_the_implementations():
    """A declared plugin's flags (read by validate) agree with the class attributes the run reads."""
    for reg in (registry.detectors, registry.defences, registry.attacks, registry.victims):
        for info in reg.items():
            if info.impl is None:
                continue
            obj = info.obj
            for flag in ("per_client", "needs_network", "needs_outliers", "replaces_victim"):
                if hasattr(obj, flag):
                    assert bool(getattr(info.caps, flag)) == bool(getattr(obj, flag)), (info.name, flag)
            assert info.description, info.name


def test_a_declared_implementation_loads_on_first_use():
    info = registry.attacks.get("knockoff")
    assert info.obj.__name__ == "KnockoffAttack"
    assert info.obj.__module__ == "stealcheck.attacks.art_extraction"
