"""The quickstart scenario cold (empty cache) and warm (same scenario again, everything cached).

Runs `stealcheck run quickstart --quiet` twice in child processes sharing a fresh cache folder,
and prints wall time and peak RSS of each (targets on 2 CPU cores: <= 180 s cold, <= 20 s warm,
<= 2 GB), plus the headline fidelities from the cold run.

    python benchmarks/quickstart.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
wall = time.perf_counter() - start
rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"BENCH rc={rc} wall={wall:.2f} rss_mb={rss_mb:.0f}")
"""


def measure(out: Path, env: dict) -> dict:
    cmd = [sys.executable, "-c", CHILD, sys.executable, "-m", "stealcheck", "run", "quickstart", "--quiet",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH")]
    if not line:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        raise SystemExit("the quickstart run did not report")
    fields = dict(kv.split("=") for kv in line[-1].split()[1:])
    return {"rc": int(fields["rc"]), "wall": float(fields["wall"]), "rss_mb": float(fields["rss_mb"])}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, STEALCHECK_CACHE_DIR=str(Path(tmp) / "cache"))
        cold = measure(Path(tmp) / "cold", env)
        warm = measure(Path(tmp) / "warm", env)
        summary = json.loads((Path(tmp) / "cold" / "summary.json").read_text())
        import pandas as pd

        frame = pd.read_csv(Path(tmp) / "cold" / "results.csv")
    print(f"quickstart on {os.cpu_count()} CPU core(s)")
    for name, m, target in (("cold", cold, 180), ("warm", warm, 20)):
        print(f"  {name}: {m['wall']:6.1f} s (target <= {target} s: {'met' if m['wall'] <= target else 'NOT met'}), "
              f"peak RSS {m['rss_mb']:.0f} MB (target <= 2048 MB: {'met' if m['rss_mb'] <= 2048 else 'NOT met'}), "
              f"exit code {m['rc']}")
    print(f"  victim: {summary['victim']['description']}, test accuracy {summary['victim']['test_accuracy']:.4f}, "
          f"trained in {summary['victim'].get('train_seconds', float('nan')):.1f} s")
    ext = frame[(frame["kind"] == "extraction") & (frame["metric"] == "fidelity")]
    table = ext.pivot_table(index="attack", columns=["defence", "budget"], values="value")
    largest = ext["budget"].max()
    print(f"  fidelity at {int(largest)} queries (attack x defence):")
    print(ext[ext["budget"] == largest].pivot_table(index="attack", columns="defence", values="value")
          .round(3).to_string())
    _ = table


if __name__ == "__main__":
    main()
