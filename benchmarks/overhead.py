"""Harness overhead: KnockoffNets (random, 1,500 queries) through stealcheck vs the bare ART call.

Same victim (conv3 trained on mnist5k, from the stealcheck cache), same pool (sklearn digits),
same thief recipe and seed, in one process. The stealcheck path adds the oracle (counting,
budget, recording, output mode), the attacker's caching client and the plugin wrapper. Each
path runs REPEATS times, interleaved; the medians and their ratio are printed (target <= 1.10).

    python benchmarks/overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from art.attacks.extraction import KnockoffNets

from stealcheck.attacks.art_extraction import KnockoffAttack, KnockoffParams
from stealcheck.attacks.base import AttackContext, seed_everything
from stealcheck.oracle import Oracle
from stealcheck.cells import Data
from stealcheck.scenario import ThiefSpec, build_scenario
from stealcheck.thief import make_thief
from stealcheck.victim import VictimContext
from stealcheck import registry
from stealcheck.cache import Cache
from stealcheck.datasets import DataContext

BUDGET = 1500
SCENARIO = {
    "name": "overhead",
    "victim": {"kind": "torch", "architecture": "conv3", "arch_params": {"width": 16},
               "input": {"shape": [1, 28, 28], "range": [0, 1]}},
    "data": {"victim_train": {"source": "mnist5k", "split": "train"}, "test": {"source": "mnist5k", "split": "test"},
             "attacker": {"source": "digits"}},
    "attacks": [{"knockoff": {"strategy": "random"}}],
    "budgets": [BUDGET],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    scenario = build_scenario(SCENARIO)
    data = Data(scenario, DataContext((1, 28, 28), (0.0, 1.0), 0, "."))
    victim = registry.victims.get("torch").obj.build(
        scenario.victim.params, VictimContext(data, data.fingerprint, Cache(), 0, False, Path(".")))
    pool, test = data("attacker"), data("test")
    spec = ThiefSpec()

    def thief():
        return make_thief(spec, "conv3", {"width": 16}, (1, 28, 28), 10, (0.0, 1.0), seed=0)

    def bare_art() -> tuple[float, object]:
        seed_everything(0)
        t = thief()
        start = time.perf_counter()
        attack = KnockoffNets(classifier=victim.classifier, batch_size_fit=spec.batch_size, batch_size_query=256,
                              nb_epochs=spec.epochs, nb_stolen=BUDGET, sampling_strategy="random",
                              use_probability=True)
        attack.extract(x=pool.x[np.random.default_rng(0).permutation(len(pool))[:BUDGET]], thieved_classifier=t)
        return time.perf_counter() - start, t

    def through_stealcheck() -> tuple[float, object]:
        oracle = Oracle(victim.predict_proba, victim.input_shape, victim.nb_classes, victim.clip_values,
                        budget=BUDGET)
        ctx = AttackContext(oracle=oracle, pool=pool, budgets=[BUDGET], make_thief=thief, thief_spec=spec, seed=0)
        start = time.perf_counter()
        (_, t), = list(KnockoffAttack(KnockoffParams(strategy="random")).run(ctx))
        elapsed = time.perf_counter() - start
        assert oracle.queries_used == BUDGET, oracle.queries_used
        return elapsed, t

    raw = victim.predict_proba(test.x).argmax(1)
    times = {"bare ART": [], "stealcheck": []}
    fid = {}
    for _ in range(args.repeats):
        for name, fn in (("bare ART", bare_art), ("stealcheck", through_stealcheck)):
            seconds, t = fn()
            times[name].append(seconds)
            fid[name] = float(np.mean(t.predict_proba(test.x).argmax(1) == raw))
    print(f"KnockoffNets random, {BUDGET} queries, conv3 victim on mnist5k, digits pool, "
          f"torch threads {torch.get_num_threads()}, {args.repeats} repeats (median)")
    for name, ts in times.items():
        print(f"  {name:<11} {statistics.median(ts):7.2f} s   (runs: {', '.join(f'{x:.2f}' for x in ts)})"
              f"   fidelity {fid[name]:.3f}")
    ratio = statistics.median(times["stealcheck"]) / statistics.median(times["bare ART"])
    print(f"  ratio stealcheck / bare ART: {ratio:.3f}  (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
