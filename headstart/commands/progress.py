"""Progress bars for the command line. Library code reports progress through callbacks
(:mod:`headstart.progress`); only the commands draw bars (tqdm), and only on rank 0."""

from __future__ import annotations

import os
import time
from typing import Any


class Bars:
    """A :class:`headstart.progress.Progress` that draws one tqdm bar per task, when ``show`` and on
    rank 0 only (elsewhere it draws nothing); a context manager that closes its bars."""

    def __init__(self, show: bool = True) -> None:
        self.show = show and int(os.environ.get("RANK", "0")) == 0  # torchrun sets RANK in every process
        self._bars: dict[str, Any] = {}

    def __call__(self, task: str, done: int, total: int | None, postfix: str = "") -> None:
        if not self.show:
            return
        bar = self._bars.get(task)
        if bar is None:
            from tqdm.auto import tqdm

            bar = self._bars[task] = tqdm(total=total, initial=done, desc=task, dynamic_ncols=True)
        if total != bar.total:
            bar.total = total
        bar.update(done - bar.n)
        if postfix:
            bar.set_postfix_str(postfix, refresh=False)

    def close(self) -> None:
        """Close every bar."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SearchProgress:
    """Live search progress: evaluations, best loss per bin, evaluations per minute."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.run: str | None = None
        self.first = 0.0
        self.count = 0

    def __call__(self, run: str, states: list[Any], cand: Any) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc="search", unit="eval")
        now = time.perf_counter()
        if run != self.run:  # rate since this run's first evaluation
            self.run, self.first, self.count = run, now, 0
        self.count += 1
        rate = 60.0 * (self.count - 1) / (now - self.first) if self.count > 1 and now > self.first else 0.0
        best = " ".join(f"{s.best.loss:.3f}" if s.best is not None else "-" for s in states)
        self.bar.set_postfix_str(f"{run} best/bin [{best}] {rate:.1f} eval/min")
        self.bar.update(1)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
