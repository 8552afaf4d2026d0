"""The run folder's results: a long-format CSV streamed as cells finish, and the cell journal."""

from __future__ import annotations

import csv
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

#: ``scheme``: the ownership scheme of kind 'ownership' rows (empty for every other kind).
COLUMNS = ["kind", "victim", "defence", "attack", "budget", "seed", "metric", "value", "scheme"]
RESULTS_FILE = "results.csv"
JOURNAL_FILE = "cells.jsonl"
SUMMARY_FILE = "summary.json"


def cell_key(kind: str, defence: str, attack: str = "", seed: int | str = "") -> str:
    return f"{kind}|{defence}|{attack}|{seed}"


def row_cell_key(kind: str, defence: str, attack: str, seed, scheme: str = "") -> str:
    """The cell a results row belongs to, as the runner journals it.

    Extraction rows belong to their (defence, attack, seed) cell and utility rows to their defence's;
    the detectors' own rows (kind 'detector') to the one 'detectors' cell, and detection rows (whose
    defence column holds the detector) to their attack's 'detection' cell.
    """
    attack = "" if attack is None or (isinstance(attack, float) and pd.isna(attack)) else attack
    if kind == "detector":
        return cell_key("detectors", "")
    if kind == "ownership":  # every row of a scheme belongs to that scheme's cell
        return cell_key("ownership", "" if scheme is None or (isinstance(scheme, float) and pd.isna(scheme))
                        else scheme)
    if kind == "detection":
        return cell_key("detection", "", attack, _seed_text(seed))
    if kind == "conflict":  # the conflict rule's rows belong to the one matrix cell
        return cell_key("interaction_matrix", "")
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
        """Keep only rows of finished cells; return the finished cells.

        The kept rows are copied as the text they were written with, never parsed into numbers and
        written back: a budget stays '1000' (not '1000.0'), so a resumed results.csv equals an
        uninterrupted one byte for byte apart from the timings.
        """
        done = self.done_cells()
        if self.csv_path.exists():
            kept = [row for row in self._raw_rows() if len(row) == len(COLUMNS)
                    and row_cell_key(*(row[COLUMNS.index(c)] for c in ("kind", "defence", "attack", "seed",
                                                                         "scheme"))) in done]
            tmp = self.csv_path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:  # the same dialect as append(), so the same bytes
                writer = csv.writer(f)
                writer.writerow(COLUMNS)
                writer.writerows(kept)
            tmp.replace(self.csv_path)
        return done

    def _raw_rows(self) -> list[list[str]]:
        """results.csv's data rows as strings; a row torn by a hard kill ends the list."""
        rows: list[list[str]] = []
        with open(self.csv_path, newline="") as f:
            reader = csv.reader(f)
            next(reader, None)  # the header
            try:
                rows.extend(reader)  # the rows read before an error stay in the list
            except csv.Error:
                pass  # the torn row belongs to an unfinished cell, which is redone anyway
        return rows

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
    frame = pd.read_csv(path, dtype={"kind": str, "victim": str, "defence": str, "attack": str, "scheme": str})
    if "scheme" not in frame.columns:  # a run folder written before ownership rows existed
        frame["scheme"] = pd.NA
    # A seed written as "" for utility rows; keep seed numeric where present.
    return frame


class RunSummary(dict):
    """summary.json's content; :meth:`save` writes it with the wall time brought up to date.

    A run may take several sessions: one is interrupted or killed, the next resumes it. ``sessions``
    lists each session's start, wall time and status, and ``wall_seconds`` is their sum. The runner
    saves the summary after every cell, so a session killed hard (kill -9, a power cut), which never
    records its end, still counts its time up to its last save; the next session marks it 'killed'.
    """

    def __init__(self, run_dir: Path, content: dict, previous: dict | None = None,
                 clock_start: float | None = None):
        """``previous``: the summary of the session being resumed; ``clock_start``: ``time.monotonic()``
        when this session began (default: now)."""
        super().__init__(content)
        self.run_dir = Path(run_dir)
        self._clock_start = time.monotonic() if clock_start is None else clock_start
        started = datetime.now(timezone.utc) - timedelta(seconds=time.monotonic() - self._clock_start)
        self["sessions"] = _earlier_sessions(previous or {}) + [
            {"started_at": started.isoformat(timespec="seconds"), "wall_seconds": 0.0, "status": "running"}]

    def save(self) -> None:
        session = self["sessions"][-1]
        session["wall_seconds"] = round(time.monotonic() - self._clock_start, 2)
        session["status"] = self.get("status", "running")
        self["wall_seconds"] = round(sum(s.get("wall_seconds") or 0.0 for s in self["sessions"]), 2)
        if len(self["sessions"]) > 1:
            self["wall_seconds_note"] = f"the sum of {len(self['sessions'])} sessions (see sessions)"
        write_summary(self.run_dir, self)


def _earlier_sessions(previous: dict) -> list[dict]:
    """The sessions recorded in a resumed run's summary, those that never recorded their end marked killed."""
    sessions = [dict(s) for s in previous.get("sessions") or []]
    if not sessions and previous.get("started_at"):  # a summary from before sessions were recorded
        sessions = [{"started_at": previous["started_at"], "wall_seconds": previous.get("wall_seconds") or 0.0,
                     "status": previous.get("status") or "running"}]
    for s in sessions:
        if s.get("status") == "running":
            s["status"] = "killed"
            s["note"] = "it ended without recording its end; its time counts up to its last saved progress"
    return sessions


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
