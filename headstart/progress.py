"""Progress reporting without a display: library code calls a :class:`Progress`; only the command line
draws bars (:mod:`headstart.commands.progress`).

A call says how far a task has come: ``progress(task, done, total, postfix)`` with ``done`` the
absolute count so far (a resumed task starts above zero), ``total`` when known, and an optional short
status text. Library functions take ``progress: Progress | None``; ``None`` reports nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives ``(task, done, total, postfix)`` as work advances."""

    def __call__(self, task: str, done: int, total: int | None, postfix: str = "") -> None:
        """Report that ``done`` of ``total`` items of ``task`` are finished."""


def report(progress: Progress | None, task: str, done: int, total: int | None, postfix: str = "") -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(task, done, total, postfix)
