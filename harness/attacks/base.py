"""What the runner gives an attack, what an attack plugin returns, and the one checkpoint signature."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

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


class CheckpointedExtraction(abc.ABC):
    """The one checkpoint signature of stealcheck's ART extraction attacks (a mixin beside ART's class).

    ``iter_checkpoints(checkpoints, *, x=None, y=None, thieved_classifier=None)`` runs the attack
    once and yields ``(budget, classifier)`` for every budget of ``checkpoints``:

    * budgets are exact: the yielded budgets are the requested ones, in ascending order, each once;
      ``checkpoints`` must be distinct positive integers (of at most ``nb_stolen`` where the attack
      has one), or :class:`ValueError` is raised by the call itself, before any query;
    * the classifier yielded at budget b uses answers to the first b queries only; the victim has
      been asked exactly b queries by then, never more, and fewer only when the attack has nothing
      left worth asking within b: JBDA's rounds ended, the tree is fully explored, Lowd-Meek has
      all its boundary points or its next boundary search (a witness and log2(1/eps) queries)
      does not fit in what is left of b;
    * the attack stops at the largest budget; the same classifier object may be yielded again,
      trained further, so read it before advancing the iterator;
    * ``x``, ``y`` and ``thieved_classifier`` mean what they mean for ART's ``extract``; an attack
      that does not need one ignores it.

    Checkpoints are given to the call, never to the constructor. ART's ``extract(x, y, **kwargs)``
    keeps working as ART users expect; most attacks run ``iter_checkpoints`` to the end there.
    """

    def iter_checkpoints(self, checkpoints: Sequence[int], *, x: np.ndarray | None = None,
                         y: np.ndarray | None = None, thieved_classifier: Any = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(budget, classifier)`` at every budget of ``checkpoints`` (see the class)."""
        points = check_checkpoints(type(self).__name__, checkpoints, getattr(self, "nb_stolen", None))
        return self._iter_checkpoints(points, x=x, y=y, thieved_classifier=thieved_classifier)

    @abc.abstractmethod
    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier: Any) -> Iterator[tuple[int, Any]]:
        """The attack, given checkpoints already checked (ascending, distinct, in range)."""

    def _run_to(self, budget: int, **kwargs) -> Any:
        """The classifier at one budget: ``iter_checkpoints([budget], **kwargs)`` run to the end (for ``extract``)."""
        out = None
        for _, out in self.iter_checkpoints([budget], **kwargs):
            pass
        return out


def check_checkpoints(owner: str, checkpoints: Sequence[int], limit: int | None = None) -> list[int]:
    """``checkpoints`` sorted ascending; :class:`ValueError` unless they are distinct positive integers
    (of at most ``limit``, the attack's ``nb_stolen``, when given)."""
    points = list(checkpoints) if isinstance(checkpoints, (list, tuple, range, np.ndarray)) else None
    ok = bool(points) and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in points)
    if ok:
        points = sorted(int(c) for c in points)
        ok = points[0] >= 1 and len(set(points)) == len(points) and (limit is None or points[-1] <= limit)
    if not ok:
        cap = f" of at most nb_stolen={limit}" if limit is not None else ""
        raise ValueError(f"The checkpoints of {owner} must be distinct positive integers{cap}. "
                         f"Got {checkpoints!r} instead.")
    return points


def seed_everything(seed: int) -> None:
    """ART's extraction attacks sample with the global ``np.random``; torch for thief init."""
    import torch

    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
