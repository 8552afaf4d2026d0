"""The in-memory data set type passed between data sources, victims, attacks and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DataContext:
    """What a data source needs to shape its output for this scenario's victim."""

    input_shape: tuple[int, ...]
    input_range: tuple[float, float]
    seed: int
    base_dir: str = "."
    #: the data set's role under ``data:`` (its key path is ``data.ROLE``), for error messages
    role: str | None = None


@dataclass
class Dataset:
    """Inputs ``x`` (float32, shaped like the victim's input) and optional int labels ``y``."""

    x: np.ndarray
    y: np.ndarray | None
    name: str

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        if self.y is not None:
            self.y = np.asarray(self.y).astype(np.int64)
            if len(self.y) != len(self.x):
                raise ValueError(f"data set '{self.name}': {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: np.ndarray, name: str | None = None) -> "Dataset":
        return Dataset(self.x[idx], None if self.y is None else self.y[idx], name or self.name)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled, class-stratified (train_idx, test_idx) with scikit-learn."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y, shuffle=True)
    return np.asarray(train_idx), np.asarray(test_idx)


def scenario_path(path: str, base_dir: str | Path) -> Path:
    """A user-given file path: ``~`` expanded, relative paths taken from the scenario file's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p
