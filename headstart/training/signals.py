"""SIGTERM/SIGINT during training: a handler asks for a checkpoint and a clean stop; the old ones come back after."""

from __future__ import annotations

import contextlib
import signal
from typing import Any


def install_signals(handler: Any) -> dict[int, Any]:
    """Route SIGTERM and SIGINT to ``handler`` (main thread only); the previous handlers, to restore."""
    old: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, handler)
    return old


def restore_signals(old: dict[int, Any]) -> None:
    """Put back the handlers :func:`install_signals` replaced."""
    for sig, handler in old.items():
        signal.signal(sig, handler)
