"""What `stealcheck validate` costs: wall time and peak memory per shipped scenario.

Targets (issue 13, on a quiet machine): <= 1.5 s and <= 200 MB per call, so that validate suits
editors and pre-commit hooks. Each call runs in a fresh child process, as an editor would start it,
repeated ``--repeat`` times (the median is printed). As a baseline measured in the same run, the
child also imports torch and ART alone (what validate cost when it imported them): the ratio shows
what the light path saves.

    python benchmarks/validate_cost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"BENCH rc={rc} wall={wall:.3f} rss_mb={rss_mb:.0f}")
"""

SCENARIOS = ("quickstart", "attacks_mnist", "same_mnist", "tramer_tabular", "tramer_digits", "tramer_tree")


def measure(argv: list[str], repeat: int) -> tuple[float, float, int]:
    """Median wall seconds and median peak RSS (MB) of ``argv`` in a child process; its exit code."""
    walls, rss, rc = [], [], 0
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True).stdout
        fields = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split()[1:])
        walls.append(float(fields["wall"]))
        rss.append(float(fields["rss_mb"]))
        rc = max(rc, int(fields["rc"]))
    return statistics.median(walls), statistics.median(rss), rc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="calls per scenario (median reported)")
    args = parser.parse_args()
    base_wall, base_rss, _ = measure([sys.executable, "-c", "import torch, art"], args.repeat)
    print(f"baseline: import torch, art alone: {base_wall:.2f} s, {base_rss:.0f} MB\n")
    # The console script is what users and hooks call; `python -m stealcheck` when it is not installed.
    script = shutil.which("stealcheck", path=str(Path(sys.executable).parent)) or shutil.which("stealcheck")
    command = [script] if script else [sys.executable, "-m", "stealcheck"]
    print(f"command: {' '.join(command)} validate NAME\n")
    print(f"{'scenario':<16} {'wall s':>7} {'peak MB':>8} {'vs baseline':>12}  target <= 1.5 s, <= 200 MB")
    for name in SCENARIOS:
        wall, rss, rc = measure([*command, "validate", name], args.repeat)
        status = "ok" if rc == 0 and wall <= 1.5 and rss <= 200 else ("INVALID" if rc else "over target")
        print(f"{name:<16} {wall:>7.2f} {rss:>8.0f} {wall / base_wall:>11.2f}x  {status}")


if __name__ == "__main__":
    main()
