"""Exceptions that the CLI turns into exit codes and readable messages."""

from __future__ import annotations


class StealcheckError(Exception):
    """Base class of every error stealcheck raises on purpose."""


class ScenarioError(StealcheckError):
    """The user's input is invalid (scenario, file, incompatible choices): exit code 2.

    ``where`` names the file (and line when known) and ``path`` the key path inside it,
    so the message can point the user at the exact spot.
    """

    def __init__(self, message: str, *, where: str | None = None, path: str | None = None):
        self.message = message
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


class BudgetExceededError(StealcheckError):
    """An attack asked the oracle for more queries than its budget allows."""


def did_you_mean(given: str, allowed: list[str] | tuple[str, ...] | set[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest allowed name, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(str(given), sorted(allowed), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
