"""What the runner gives an attack, and what an attack plugin returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from stealcheck.datasets import Dataset
from stealcheck.oracle import Oracle
from stealcheck.scenario import ThiefSpec
from stealcheck.thief import ThiefClassifier


@dataclass
class AttackContext:
    """One attack execution: the oracle (with the budget), the attacker's pool and the thief factory."""

    oracle: Oracle
    pool: Dataset | None  # the attacker's pool; None when no attack of the scenario samples one
    budgets: list[int]  # ascending checkpoints; the oracle's budget is the largest
    make_thief: Callable[[], ThiefClassifier]
    thief_spec: ThiefSpec
    seed: int
    progress: bool = False
    load_data: Callable[[str], Dataset] | None = None  # other named data sets of the scenario (e.g. JBDA seeds)
    # the scenario's fitted detectors by id (an adaptive attacker that knows the deployed detector reads them)
    detectors: dict[str, Any] | None = None


class AttackPlugin(Protocol):
    """An attack plugin: constructed with its params, ``run`` yields (budget, thief) at every checkpoint.

    The thief yielded at checkpoint b must have been trained only on answers to the first
    b queries the oracle counted for this execution.
    """

    def __init__(self, params) -> None: ...

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ThiefClassifier]]: ...


def seed_everything(seed: int) -> None:
    """ART's extraction attacks sample with the global ``np.random``; torch for thief init."""
    import torch

    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
