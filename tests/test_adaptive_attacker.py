"""Knockoff's proxy choice and the adaptive attacker who knows the deployed detector."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stealcheck.attacks.art_extraction import KnockoffParams, knockoff_pool
from stealcheck.attacks.base import AttackContext
from stealcheck.datasets import Dataset
from stealcheck.errors import ScenarioError
from stealcheck.scenario import build_scenario, check_scenario

from test_detection_run import detection_scenario


class Brightness:
    """A stand-in detector: the mean pixel value is the suspicion score."""

    def score(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).mean(axis=1)


def _ctx(pool: Dataset, budgets: list[int], detectors=None, extra: dict | None = None) -> AttackContext:
    data = {"attacker": pool, **(extra or {})}
    return AttackContext(oracle=None, pool=pool, budgets=budgets, make_thief=None, thief_spec=None, seed=0,
                         load_data=lambda role: data[role], detectors=detectors)


def _pool(n: int = 100, seed: int = 0) -> Dataset:
    return Dataset(np.random.default_rng(seed).uniform(0, 1, (n, 1, 4, 4)).astype(np.float32), None, "noise")


def test_keeps_the_share_the_detector_scores_lowest():
    pool = _pool()
    p = KnockoffParams(avoid_detector="bright", keep_fraction=0.3)
    kept = knockoff_pool(p, _ctx(pool, [20], {"bright": Brightness()}))
    assert len(kept) == 30
    scores = Brightness().score(pool.x)
    assert Brightness().score(kept.x).max() <= np.sort(scores)[29]  # exactly the 30 lowest
    assert "lowest 0.3 by bright" in kept.name


def test_pool_data_replaces_the_attacker_pool():
    letters = _pool(60, seed=1)
    kept = knockoff_pool(KnockoffParams(pool_data="letters"), _ctx(_pool(), [50], extra={"letters": letters}))
    assert kept is letters


def test_readable_errors():
    with pytest.raises(ValueError, match="not a fitted detector"):
        knockoff_pool(KnockoffParams(avoid_detector="nope", keep_fraction=0.5), _ctx(_pool(), [10], {}))
    with pytest.raises(ValueError, match="fewer than the largest budget"):
        knockoff_pool(KnockoffParams(avoid_detector="b", keep_fraction=0.1), _ctx(_pool(), [20], {"b": Brightness()}))
    with pytest.raises(ValueError, match="set avoid_detector"):
        KnockoffParams(keep_fraction=0.5)


@pytest.mark.parametrize("attack, message", [
    ({"plugin": "knockoff", "id": "k", "params": {"avoid_detector": "fusion"}}, "does not declare"),
    ({"plugin": "knockoff", "id": "k", "params": {"avoid_detector": "prada"}}, "flags clients"),
    ({"plugin": "knockoff", "id": "k", "params": {"pool_data": "letters"}}, "letters"),
])
def test_scenario_checks(attack, message):
    with pytest.raises(ScenarioError, match=message):
        check_scenario(build_scenario(detection_scenario(attacks=[attack])))


def test_letters_proxy_and_adaptive_knockoff_end_to_end(tmp_path, monkeypatch):
    """A letters proxy is scored as its own attack; the adaptive attacker's queries score lower on the
    detector it avoids than the plain attack's, and its thief is still evaluated."""
    import pandas as pd

    from stealcheck.runner import run_scenario

    monkeypatch.setenv("STEALCHECK_CACHE_DIR", str(tmp_path / "cache"))
    base = detection_scenario()
    base["data"]["letters"] = {"source": "glyphs", "size": 400}
    scenario = build_scenario({**base, "defences": ["none"], "detectors": ["fusion"],
                               "detection": {"budgets": [100]},
                               "attacks": [{"plugin": "knockoff", "id": "knockoff"},
                                           {"plugin": "knockoff", "id": "letters", "params": {"pool_data": "letters"}},
                                           {"plugin": "knockoff", "id": "stealthy",
                                            "params": {"avoid_detector": "fusion", "keep_fraction": 0.2}}]})
    outcome = run_scenario(scenario, out_dir=tmp_path / "run", quiet=True)
    assert outcome.status == "complete"
    frame = pd.read_csv(tmp_path / "run" / "results.csv")
    auroc = frame[(frame["kind"] == "detection") & (frame["metric"] == "auroc")].set_index("attack")["value"]
    assert auroc["letters"] > 0.9  # rendered letters are far from the victim's digits
    assert auroc["stealthy"] < auroc["knockoff"] - 0.1
    fid = frame[(frame["kind"] == "extraction") & (frame["metric"] == "fidelity")]
    assert set(fid["attack"]) == {"knockoff", "letters", "stealthy"}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["detectors"]["fusion"]["signals"][0] == "pixel_density"  # what the report's signals table reads
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Adaptive attacker: copy quality vs. detection" in html
    assert "Signals the fusion detectors used" in html
    assert "Best fidelity with fusion AUROC below 70%" in html
