"""Warnings during a run: stealcheck's own reach the terminal (one line each) and run.log; libraries'
(scikit-learn's ConvergenceWarning) go to run.log only, so the terminal stays readable."""

from __future__ import annotations

import warnings

import yaml

from stealcheck.cli import main

SCENARIO = {
    "name": "blr-warnings",
    "victim": {"kind": "sklearn", "model": "logistic_regression", "model_params": {"C": 1000.0, "max_iter": 3},
               "input": {"shape": [30]}},
    "data": {"victim_train": {"source": "sklearn", "name": "breast_cancer", "split": "train"},
             "test": {"source": "sklearn", "name": "breast_cancer", "split": "test"}},
    "defences": [{"rounded": {"decimals": 2}}],
    "attacks": [{"equation_solving": {"model": "binary_lr"}}],
    "budgets": [62],
}


def test_own_warnings_on_the_terminal_library_warnings_in_the_log(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # pytest's own filters must not hide what the run does
        assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    log = (tmp_path / "run" / "run.log").read_text()
    # Rounded answers fit no single logistic regression: stealcheck's warning, on the terminal once
    # (one checkpoint) and in the log.
    assert err.count("stealcheck: warning: equation_solving (binary_lr):") == 1, err
    assert "WARNING equation_solving (binary_lr):" in log
    # max_iter=3 makes scikit-learn warn while the victim trains: the log has it, the terminal does not.
    assert "ConvergenceWarning" in log
    assert "ConvergenceWarning" not in err and "_check_optimize_result" not in err
