"""What `validate` accepts, `run` accepts; what `run` would reject after training, `validate` rejects.

Each case here was found by trying inputs that passed validate and then failed in run (one with a
raw exit 3), or by planting a module beside a scenario.
"""

from __future__ import annotations

import numpy as np
import yaml

from stealcheck.cli import main


def _write(tmp_path, scenario: dict):
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def _tabular(tmp_path, data: dict, **victim) -> dict:
    return {"name": "t", "victim": {"kind": "sklearn", "input": {"shape": [4]}, **victim}, "data": data,
            "attacks": [{"equation_solving": {"model": "softmax"}}], "budgets": [20]}


def _csv(tmp_path, header: str, labels) -> str:
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.3f}" for v in rng.uniform(0, 1, 4)) + f",{lab}" for lab in labels]
    (tmp_path / "d.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return "d.csv"


def _run(path, tmp_path, capsys) -> tuple[int, int, str]:
    capsys.readouterr()
    validated = main(["validate", str(path)])
    ran = main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) if validated == 0 else None
    return validated, ran, capsys.readouterr().err


def test_csv_header_with_spaces_runs_as_it_validates(tmp_path, capsys):
    name = _csv(tmp_path, "f1, f2, f3, f4, label", [i % 3 for i in range(60)])
    data = {"victim_train": {"source": "csv", "path": name, "split": "train"},
            "test": {"source": "csv", "path": name, "split": "test"}}
    validated, ran, err = _run(_write(tmp_path, _tabular(tmp_path, data)), tmp_path, capsys)
    assert (validated, ran) == (0, 0), err


def test_sklearn_labels_not_starting_at_zero_are_refused_by_validate(tmp_path, capsys):
    name = _csv(tmp_path, "f1,f2,f3,f4,label", [1 + i % 2 for i in range(60)])
    data = {"victim_train": {"source": "csv", "path": name, "split": "train"},
            "test": {"source": "csv", "path": name, "split": "test"}}
    validated, _, err = _run(_write(tmp_path, _tabular(tmp_path, data)), tmp_path, capsys)
    assert validated == 2
    assert "data.victim_train" in err and "needs labels 0..1" in err


def test_svc_without_probabilities_is_refused_by_validate(tmp_path, capsys):
    data = {"victim_train": {"source": "sklearn", "name": "iris", "split": "train"},
            "test": {"source": "sklearn", "name": "iris", "split": "test"}}
    scenario = _tabular(tmp_path, data, model="svc", model_params={"probability": False})
    validated, _, err = _run(_write(tmp_path, scenario), tmp_path, capsys)
    assert validated == 2 and "victim.model_params.probability" in err


def test_unlabelled_split_sizes_agree_between_validate_and_run(tmp_path, capsys):
    """101 unlabelled samples, 30% test: validate and run both count ceil(30.3) = 31 for the pool."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pool.npz", x=rng.uniform(0, 1, (101, 4)).astype(np.float32))
    data = {"victim_train": {"source": "sklearn", "name": "iris", "split": "train"},
            "test": {"source": "sklearn", "name": "iris", "split": "test"},
            "attacker": {"source": "npz", "path": "pool.npz", "y_key": None, "split": "test", "test_fraction": 0.3}}
    scenario = _tabular(tmp_path, data)
    scenario["attacks"] = ["copycat"]
    scenario["budgets"] = [10, 31]
    validated, ran, err = _run(_write(tmp_path, scenario), tmp_path, capsys)
    assert (validated, ran) == (0, 0), err


def test_a_module_beside_the_scenario_never_shadows_an_installed_package(tmp_path):
    """In a fresh process (this one has scikit-learn imported already), a planted sklearn.py beside
    the scenario must not run when validate imports scikit-learn to check model_params."""
    import subprocess
    import sys

    (tmp_path / "sklearn.py").write_text("raise SystemExit('the planted sklearn.py ran')\n")
    data = {"victim_train": {"source": "sklearn", "name": "iris", "split": "train"},
            "test": {"source": "sklearn", "name": "iris", "split": "test"}}
    path = _write(tmp_path, _tabular(tmp_path, data, model_params={"C": 2.0}))
    out = subprocess.run([sys.executable, "-m", "stealcheck", "validate", str(path)], capture_output=True, text=True,
                         cwd=tmp_path.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "planted" not in out.stderr + out.stdout
