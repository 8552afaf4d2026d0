"""What a victim adapter hands the runner: an ART classifier that outputs probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .cache import Cache
from .datasets import Dataset


@dataclass(frozen=True)
class VictimContext:
    """Everything an adapter may use to build (or train) the victim."""

    load_data: Callable[[str], Dataset]  # role -> data set (e.g. "victim_train")
    data_fingerprint: Callable[[str], Any]  # role -> what determines that data set (for cache keys)
    cache: Cache
    seed: int
    progress: bool
    base_dir: Path


@dataclass
class Victim:
    """A victim ready to be served: ``classifier.predict`` returns class probabilities."""

    classifier: Any
    nb_classes: int
    input_shape: tuple[int, ...]
    clip_values: tuple[float, float]
    description: str
    thief_architecture: str
    thief_arch_params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: PyTorch victims only (detectors build auxiliary or retrained models from these):
    #: a fresh untrained network of the victim's architecture with its normalisation (logits out),
    network_factory: Callable[[], Any] | None = None
    #: the trained network (logits out), and the recipe it was (or would be) trained with.
    network: Any = None
    train_recipe: dict[str, Any] = field(default_factory=dict)
    #: tree victims only: x -> leaf identifier per sample (the "leaf" output mode), else None
    leaf_ids: Callable[[np.ndarray], np.ndarray] | None = None
    #: linear victims only: white-box parameters {family, W (d x k), b (k)}, for evaluation only: the
    #: extraction cell compares each copy with them after the attack; never on the oracle or in an attack's context.
    parameters: dict[str, Any] | None = None
    #: the attacker's door: what the oracle calls to answer an attack's queries (x -> probabilities, float64).
    #: None = :meth:`predict_proba`, as for every in-process victim. A remote victim answers the attacker
    #: under the attacker's API key here, and the evaluation's own queries (``predict_proba``: test set,
    #: uniform inputs, detectors' fitting) under a separate one, so that the two are counted apart.
    query: Callable[[np.ndarray], np.ndarray] | None = None
    #: remote victims: () -> {identity: {queries, requests, retries, server_queries_used, ...}}, what each
    #: client identity sent (counted here) and what the server reports having charged it; None elsewhere
    usage: Callable[[], dict[str, dict[str, Any]]] | None = None

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray | None:
        """The victim's logits (PyTorch victims), else None."""
        if self.network is None:
            return None
        import torch

        self.network.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                out.append(self.network(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size],
                                                                             dtype=np.float32))).numpy())
        return np.concatenate(out).astype(np.float64) if out else np.empty((0, self.nb_classes))

    def attacker_predict(self, x: np.ndarray) -> np.ndarray:
        """What an attacker's query gets from the victim before any defence (the oracle's input)."""
        return self.query(x) if self.query is not None else self.predict_proba(x)

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Raw (undefended) class probabilities."""
        return np.asarray(self.classifier.predict(x.astype(np.float32), batch_size=batch_size), dtype=np.float64)
