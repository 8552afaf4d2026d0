"""The detector interface: score single queries for how likely they come from an extraction attack.

Every detector (SAME, Outlier Exposure, EDM, the max-softmax and energy baselines, ...) follows
one small interface::

    det = DetectorClass(params)           # params: the plugin's pydantic model
    det.fit(ctx)                          # -> det; ctx says what the defender may use
    det.score(x)                          # -> np.ndarray (n,), higher = more suspicious
    det.save(folder); DetectorClass(params).load(folder, ctx)

What a detector may see is exactly what :class:`DetectorContext` carries: the victim (as a
black box, plus its architecture when it is a PyTorch model), the victim's own training data,
benign held-out data for calibration, and optional auxiliary data (an outlier set) that the
scenario provides. Attack queries are never part of it, so no detector can be fitted on them.

Detectors that change the victim (OE, EDM) expose the model that answers in their place through
:meth:`Detector.serving_predict`; the runner reports the victim's accuracy under each detector.

Saving uses ``torch.save`` of plain tensors/arrays and JSON; loading uses
``torch.load(weights_only=True)`` — a cached detector is data, never code.

Stateful per-client detectors (PRADA) flag *clients* rather than queries: they set
``per_client = True`` and implement :meth:`Detector.flag_stream` instead of a useful ``score``.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from stealcheck.datasets import Dataset


@dataclass
class DetectorContext:
    """Everything a detector may use to fit itself: never the attacker's queries.

    - ``predict_proba(x)``: the victim's probabilities (black-box access, always available).
    - ``logits(x)``: the victim's logits when the victim is a PyTorch model, else None
      (the energy score needs logits: probabilities fix them only up to a per-input shift, which is
      exactly what the energy measures; see ``baselines.EnergyDetector``).
    - ``make_network()``: a fresh, untrained network of the victim's architecture (with its input
      normalisation) that returns logits, or None when the victim is not a PyTorch model. Used
      for auxiliary models (SAME) and retrained victims (OE, EDM).
    - ``victim_network``: the trained victim network itself (logits), or None.
    - ``train``: the victim's training data (labelled) — what SAME's MAE and OE/EDM train on.
    - ``calibration``: benign, labelled-or-not, held-out in-distribution data the victim never
      trained on: for standardising scores and choosing thresholds.
    - ``outliers``: the auxiliary outlier set (OE, EDM), or None when the scenario has none.
    - ``train_recipe``: the victim's training recipe ({steps, batch_size, lr}) so that retrained
      victims get the same budget.
    - ``cache`` / ``identity``: a :class:`stealcheck.cache.Cache` and a JSON-able description of
      the victim and data, for detectors that cache sub-artefacts shared between their variants
      (SAME's MAE is the same for SAME, SAME-X and SAME-Y). ``cache`` may be None.
    """

    predict_proba: Callable[[np.ndarray], np.ndarray]
    nb_classes: int
    input_shape: tuple[int, ...]
    clip_values: tuple[float, float]
    train: Dataset
    calibration: Dataset | None = None
    outliers: Dataset | None = None
    logits: Callable[[np.ndarray], np.ndarray] | None = None
    make_network: Callable[[], Any] | None = None
    victim_network: Any = None
    train_recipe: dict[str, Any] = field(default_factory=lambda: {"steps": 800, "batch_size": 64, "lr": 3e-3})
    seed: int = 0
    progress: bool = False
    cache: Any = None
    identity: Any = None


class Detector(ABC):
    """Base class of query detectors. Subclasses document, in their docstring, what the defender
    needs (auxiliary outlier data? retraining the victim? per-client history?)."""

    #: the detector changes the model that answers queries (OE, EDM)
    replaces_victim: ClassVar[bool] = False
    #: the detector flags clients from their query history (PRADA), not single queries
    per_client: ClassVar[bool] = False
    #: needs the victim's PyTorch architecture (auxiliary model, retraining)
    needs_network: ClassVar[bool] = False
    #: needs ``ctx.outliers``
    needs_outliers: ClassVar[bool] = False

    def __init__(self, params: Any):
        self.params = params
        self.fit_seconds: float | None = None
        self._ctx: DetectorContext | None = None

    # -- what subclasses implement -------------------------------------------------------------
    def setup(self, ctx: DetectorContext) -> None:
        """Build the (untrained) modules; called by :meth:`fit` and :meth:`load`."""
        self._ctx = ctx

    @abstractmethod
    def _fit(self, ctx: DetectorContext) -> None:
        """Train on what ``ctx`` allows."""

    @abstractmethod
    def score(self, x: np.ndarray) -> np.ndarray:
        """Suspicion score per query (higher = more likely an extraction query)."""

    def summary(self) -> dict[str, Any]:
        """What the report should know about this fitted detector beyond its scores (JSON-able)."""
        return {}

    def state(self) -> dict[str, Any]:
        """Tensors / arrays / numbers that, with the params, rebuild the fitted detector."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""

    def serving_predict(self, x: np.ndarray) -> np.ndarray | None:
        """Probabilities of the model that answers in place of the victim (OE, EDM); None = the victim."""
        return None

    def flag_stream(self, x: np.ndarray) -> int | None:
        """Per-client detectors: index of the query at which a client sending ``x`` in order is flagged."""
        raise NotImplementedError(f"{type(self).__name__} scores single queries; use score()")

    # -- shared behaviour ----------------------------------------------------------------------
    def fit(self, ctx: DetectorContext) -> "Detector":
        """Fit on what the defender has (``ctx``); records ``fit_seconds``; returns self."""
        if self.needs_outliers and ctx.outliers is None:
            raise ValueError(f"{type(self).__name__} needs an outlier data set (data role 'outliers')")
        if self.needs_network and ctx.make_network is None:
            raise ValueError(f"{type(self).__name__} needs a PyTorch victim (it builds networks of its architecture)")
        start = time.perf_counter()
        self.setup(ctx)
        self._fit(ctx)
        self.fit_seconds = time.perf_counter() - start
        return self

    def save(self, folder: str | Path) -> None:
        import torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.state(), folder / "state.pt")
        (folder / "meta.json").write_text(json.dumps({"detector": type(self).__name__,
                                                      "fit_seconds": self.fit_seconds}))

    def load(self, folder: str | Path, ctx: DetectorContext) -> "Detector":
        import torch

        folder = Path(folder)
        self.setup(ctx)
        self.load_state(torch.load(folder / "state.pt", map_location="cpu", weights_only=True))
        meta = json.loads((folder / "meta.json").read_text())
        self.fit_seconds = meta.get("fit_seconds")
        return self


def batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Apply ``fn`` to ``x`` in batches and concatenate (keeps memory flat on large query sets)."""
    if len(x) == 0:
        return np.empty((0,))
    return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])
