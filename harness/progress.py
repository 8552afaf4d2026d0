"""What a run shows on the terminal: cells done out of the total, and stealcheck's own warnings."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

from .cells import CellResult
from .text import fmt_duration


class CellProgress:
    """Counts finished cells for the progress output and summary.json's ``cells`` alike.

    On a terminal it draws a tqdm bar. When stderr is not a terminal (a log file, CI), it prints one
    plain line per finished cell instead, with no carriage returns. Cells restored from the journal
    of a resumed run count as done from the start. ``--quiet`` shows nothing, but still counts.
    Cells may finish in any order (on a cluster), so each line names the cell that finished.
    """

    def __init__(self, planned: list[str], done: set[str], summary: dict, quiet: bool):
        restored = sum(k in done for k in planned)
        self.total = len(planned)
        self.counts = summary["cells"] = {"total": self.total, "done": restored, "restored": restored,
                                          "from_cache": 0, "failed": 0}
        self.lines = not quiet and not stderr_is_terminal()
        self.bar = tqdm(total=self.total, initial=restored, desc="cells", unit="cell", disable=quiet or self.lines)
        if self.lines and restored:
            self._print(f"resuming: {restored} of {self.total} cells were done before")

    def start(self, label: str) -> None:
        self.bar.set_postfix_str(label)

    def finish(self, result: CellResult) -> None:
        if result.error is not None:
            self.counts["failed"] += 1
            if self.lines:
                self._print(f"[{self.counts['done']}/{self.total}] {result.label}: FAILED: {result.error}")
            return
        self.counts["done"] += 1
        self.counts["from_cache"] += int(result.from_cache)
        self.bar.update(1)
        if self.lines:
            how = "reused from the cache" if result.from_cache else f"done in {fmt_duration(result.seconds)}"
            self._print(f"[{self.counts['done']}/{self.total}] {result.label}: {how}")

    def close(self) -> None:
        self.bar.close()

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


class TerminalWarnings(logging.Handler):
    """stealcheck's own warnings (e.g. an ill-conditioned equation solve) reach the terminal too, one
    line each, through tqdm so that a progress bar is not broken; run.log keeps them with the rest."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(f"stealcheck: warning: {record.getMessage()}", file=sys.stderr)
        except Exception:  # a closed or odd stderr must not fail the run
            self.handleError(record)


def show_progress_bars(quiet: bool) -> bool:
    """Whether progress bars are drawn: not with --quiet, and only on a terminal (their redraws are
    carriage returns, which fill a log file with noise)."""
    return not quiet and stderr_is_terminal()


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False
