"""Progress reporting: library code calls a :class:`Progress`; :class:`Feedback` shows it.

A call says how far a task has come: ``progress(task, done, total, postfix)`` with ``done`` the absolute
count so far (a resumed task starts above zero), ``total`` when known, and an optional short status text.
Library functions take ``progress: Progress | None``; ``None`` reports nothing. :class:`Feedback` draws a
bar per task on a terminal and, without one (a log file, a pipe, a batch job), logs a line per task while
it runs, every ``every`` seconds with its rate and ETA, and once when it ends; only rank 0 shows anything.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("headstart")


class Progress(Protocol):
    """Receives ``(task, done, total, postfix)`` as work advances."""

    def __call__(self, task: str, done: int, total: int | None, postfix: str = "") -> None:
        """Report that ``done`` of ``total`` items of ``task`` are finished."""


def report(progress: Progress | None, task: str, done: int, total: int | None, postfix: str = "") -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(task, done, total, postfix)


@dataclass
class _Line:
    start: float
    start_done: int
    last_log: float


class Feedback:
    """A :class:`Progress` for people: tqdm bars on a terminal (``bars``, default: when stderr is one), else a
    log line per task every ``every`` seconds. A context manager that closes its bars."""

    def __init__(self, show: bool = True, bars: bool | None = None, every: float = 20.0) -> None:
        self.show = show and int(os.environ.get("RANK", "0")) == 0  # torchrun sets RANK in every process
        self.bars = sys.stderr.isatty() if bars is None else bars
        self.every = every
        self._bars: dict[str, Any] = {}
        self._lines: dict[str, _Line] = {}

    def __call__(self, task: str, done: int, total: int | None, postfix: str = "") -> None:
        if not self.show:
            return
        if self.bars:
            self._bar(task, done, total, postfix)
        else:
            self._line(task, done, total, postfix)

    def _bar(self, task: str, done: int, total: int | None, postfix: str) -> None:
        bar = self._bars.get(task)
        if bar is None:
            from tqdm.auto import tqdm

            bar = self._bars[task] = tqdm(total=total, initial=done, desc=task, dynamic_ncols=True)
        if total != bar.total:
            bar.total = total
        bar.update(done - bar.n)
        if postfix:
            bar.set_postfix_str(postfix, refresh=False)

    def _line(self, task: str, done: int, total: int | None, postfix: str) -> None:
        now = time.monotonic()
        line = self._lines.setdefault(task, _Line(now, done, now))
        finished = total is not None and done >= total
        if finished:
            del self._lines[task]
            log.info("%s", status_line(task, done, total, now - line.start, done - line.start_done, postfix,
                                       finished=True))
        elif now - line.last_log >= self.every:
            line.last_log = now
            log.info("%s", status_line(task, done, total, now - line.start, done - line.start_done, postfix))

    def close(self) -> None:
        """Close every bar."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> Feedback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def status_line(task: str, done: int, total: int | None, seconds: float, advanced: int, postfix: str = "",
                finished: bool = False) -> str:
    """``task: 40/100 (40%), 2.1/s, ETA 0:00:28, postfix`` (rate and ETA from ``advanced`` items in ``seconds``),
    or ``task: done, 100 in 12.3 s (8.1/s), postfix`` when ``finished``."""
    rate = advanced / seconds if seconds > 0 and advanced > 0 else None
    if finished:
        count = "" if total == 1 else f", {done:,}"
        speed = f" ({rate:.3g}/s)" if rate is not None and total != 1 else ""
        return f"{task}: done{count} in {seconds:.1f} s{speed}" + (f", {postfix}" if postfix else "")
    parts = [f"{task}: {done:,}" + (f"/{total:,} ({100 * done / total:.0f}%)" if total else "")]
    if rate is not None:
        parts.append(f"{rate:.3g}/s")
        if total and done < total:
            eta = int((total - done) / rate)
            parts.append(f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
    if postfix:
        parts.append(postfix)
    return ", ".join(parts)


def quiet_libraries() -> None:
    """Silence the progress bars and load reports of transformers and huggingface_hub (ours replace them)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("transformers", "httpx", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "transformers" else logging.WARNING)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
