"""Every seed of a run, derived with numpy's SeedSequence from (data_seed, seed, what it seeds).

A cell seeds its random streams from its own identity, never from state left by the cells before
it, so its results are the same whatever order cells run in and whichever process runs them.
Streams that must agree share an identity: an attack's randomness (its query order, the thief's
initialisation) depends on the attack and the seed only, not on the defence, so every defence faces
the same attacker, and the detection track scores the queries of the undefended extraction.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(*parts: int | str) -> int:
    """A 32-bit seed determined by ``parts`` (whole numbers, and names such as a cell's attack id)."""
    entropy = [p if isinstance(p, int) else _name_entropy(p) for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def attack_seed(data_seed: int, seed: int, attack_id: str) -> int:
    """The seed of one attack run (query order, sampling, thief initialisation)."""
    return derive_seed(data_seed, seed, "attack", attack_id)


def _name_entropy(name: str) -> int:
    """A name as a whole number (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
