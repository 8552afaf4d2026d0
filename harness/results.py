"""The run folder's results: a long-format CSV streamed as cells finish, and the cell journal."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

COLUMNS = ["kind", "victim", "defence", "attack", "budget", "seed", "metric", "value"]
RESULTS_FILE = "results.csv"
JOURNAL_FILE = "cells.jsonl"
SUMMARY_FILE = "summary.json"


def cell_key(kind: str, defence: str, attack: str = "", seed: int | str = "") -> str:
    return f"{kind}|{defence}|{attack}|{seed}"


def row_cell_key(kind: str, defence: str, attack: str, seed) -> str:
    """The cell a results row belongs to, as the runner journals it.

    Extraction rows belong to their (defence, attack, seed) cell and utility rows to their defence's;
    the detectors' own rows (kind 'detector') to the one 'detectors' cell, and detection rows (whose
    defence column holds the detector) to their attack's 'detection' cell.
    """
    attack = "" if attack is None or (isinstance(attack, float) and pd.isna(attack)) else attack
    if kind == "detector":
        return cell_key("detectors", "")
    if kind == "detection":
        return cell_key("detection", "", attack, _seed_text(seed))
    return cell_key(kind, defence, attack, _seed_text(seed))


def _seed_text(seed) -> str:
    """The seed as cell_key writes it: '' for utility rows, '3' (not '3.0') once pandas made it a float."""
    if seed is None or seed == "" or (isinstance(seed, float) and pd.isna(seed)):
        return ""
    return str(int(float(seed)))


class ResultsStore:
    """Appends rows to results.csv and records finished cells in cells.jsonl (both flushed at once).

    Rows of a cell that never finished (an interrupted run) are dropped by :meth:`open_for_resume`,
    so a resumed run redoes exactly the unfinished cells.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / RESULTS_FILE
        self.journal_path = self.run_dir / JOURNAL_FILE

    def done_cells(self) -> set[str]:
        if not self.journal_path.exists():
            return set()
        done = set()
        for line in self.journal_path.read_text().splitlines():
            if line.strip():
                try:
                    done.add(json.loads(line)["cell"])
                except (json.JSONDecodeError, KeyError):
                    continue  # a torn last line from a hard kill
        return done

    def open_for_resume(self) -> set[str]:
        """Keep only rows of finished cells; return the finished cells."""
        done = self.done_cells()
        if self.csv_path.exists():
            frame = read_results(self.run_dir)
            keys = [row_cell_key(k, d, a, s) for k, d, a, s in
                    zip(frame["kind"], frame["defence"], frame["attack"], frame["seed"])]
            frame = frame[np.array([k in done for k in keys], dtype=bool)]
            frame.to_csv(self.csv_path, index=False, columns=COLUMNS)
        return done

    def reset(self) -> None:
        for p in (self.csv_path, self.journal_path):
            if p.exists():
                p.unlink()

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in COLUMNS})

    def finish_cell(self, key: str) -> None:
        with open(self.journal_path, "a") as f:
            f.write(json.dumps({"cell": key}) + "\n")


def read_results(run_dir: Path) -> pd.DataFrame:
    """results.csv as a DataFrame (empty with the right columns if missing)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path, dtype={"kind": str, "victim": str, "defence": str, "attack": str})
    # A seed written as "" for utility rows; keep seed numeric where present.
    return frame


def write_summary(run_dir: Path, summary: dict) -> None:
    path = Path(run_dir) / SUMMARY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        from .errors import ScenarioError

        raise ScenarioError(f"{run_dir} is not a stealcheck run folder (no {SUMMARY_FILE}).")
    return json.loads(path.read_text())
