"""Exceptions that the CLI turns into exit codes and readable messages."""

from __future__ import annotations

import re
from collections.abc import Iterable


class StealcheckError(Exception):
    """Base class of every error stealcheck raises on purpose."""


class ScenarioError(StealcheckError):
    """The user's input is invalid (scenario, file, incompatible choices): exit code 2.

    ``where`` names the file (and line when known) and ``path`` the key path inside it,
    so the message can point the user at the exact spot.
    """

    # A message is read by a person: one that quotes a huge value in full is cut (see short_repr).
    MAX_MESSAGE = 2000

    def __init__(self, message: str, *, where: str | None = None, path: str | None = None):
        self.message = shorten(message, self.MAX_MESSAGE)
        self.where = where
        self.path = path
        super().__init__(self.format())

    def format(self) -> str:
        prefix = []
        if self.where:
            prefix.append(self.where)
        if self.path:
            prefix.append(f"at '{self.path}'")
        head = ": ".join([" ".join(prefix)]) if prefix else ""
        return f"{head}: {self.message}" if head else self.message


class RunFailedEarly(StealcheckError):
    """The run failed before its run folder existed, so there is no summary.json or run.log to read:
    ``log_tail`` holds what was logged until then (exit code 3)."""

    def __init__(self, cause: BaseException, log_tail: list[str]):
        self.cause = cause
        self.log_tail = log_tail
        super().__init__(f"{type(cause).__name__}: {cause}")


class BudgetExceededError(StealcheckError):
    """An attack asked the oracle for more queries than its budget allows."""


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut in the middle to about ``limit`` characters.

    Messages quote the value the user gave; a 100 KB list quoted in full buries the message.
    """
    try:
        text = repr(value)
    except Exception:  # a user object whose __repr__ fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return shorten(text, limit)


def shorten(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its two ends around a note of its length."""
    if len(text) <= limit:
        return text
    keep = max(limit - 20, 10)
    return f"{text[:keep - keep // 2]} ... {text[-(keep // 2):]} ({len(text):,} characters)"


def did_you_mean(given: object, allowed: Iterable[object]) -> str:
    """Return ' Did you mean 'x'?' for the closest allowed name, or '' when none is close.

    An abbreviation (``arch``) is matched to the names it starts before spelling similarity is
    tried, because difflib ranks short unrelated names (``cache``) above the long name meant
    (``architecture``). Among several such names, the one of fewest words wins: a bare
    abbreviation most likely stands for one word (``architecture``, not ``arch_params``).
    """
    import difflib

    given = str(given)
    names = sorted({str(a) for a in allowed})
    if len(given) >= 3:
        starts = [n for n in names if n.lower().startswith(given.lower()) and n.lower() != given.lower()]
        if starts:
            best = min(starts, key=lambda n: (len(re.split(r"[_\-.]", n)), len(n), n))
            return f" Did you mean '{best}'?"
    close = difflib.get_close_matches(given, names, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
