"""One writer per output: an advisory lock file inside the output directory.

:func:`output_lock` takes an exclusive ``flock`` on ``DIR/.headstart.lock``. The kernel releases it
when the holder's last descriptor closes, so a process killed with ``kill -9`` never leaves a lock
that blocks the rerun (the file may stay; the next taker simply locks it). The file records the
holder's pid, host and command, which the refusal names. A clean release unlinks the file while still
holding the lock; a taker therefore checks, after locking, that the name still leads to the file it
locked (else it locked an unlinked file and tries again), which keeps unlinking safe.

The lock is re-entrant within one process (a stage may take the lock its pipeline already holds).
Under ``torchrun`` only the process that writes (rank 0) should take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from headstart.errors import OutputError, OutputLockedError

log = logging.getLogger(__name__)

LOCK_NAME = ".headstart.lock"
_HELD: dict[str, list[int]] = {}  # resolved lock path -> [descriptor, depth], held by this process
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike[str], *, what: str = "--out") -> Iterator[Path]:
    """Hold the lock of output ``directory`` (created if missing) for the ``with`` block.

    A second writer gets :class:`~headstart.errors.OutputLockedError` at once, naming the holder's pid
    and command. If this call created ``directory`` and the block fails, the directory is removed again
    when it is empty (a refused or failed run leaves nothing behind). ``what`` names the option in
    messages.
    """
    directory = Path(directory).expanduser()
    created = _make_dirs(directory, what)
    path = directory / LOCK_NAME
    key = str(path.resolve())
    if key in _HELD:  # re-entrant: this process already holds it
        _HELD[key][1] += 1
        try:
            yield directory
        finally:
            _HELD[key][1] -= 1
        return
    try:
        fd = _acquire(path, directory, what)
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[key] = [fd, 1]
    try:
        yield directory
    except BaseException:
        _release(key, path)
        _remove_empty(created)
        raise
    _release(key, path)


def _forget_in_child() -> None:
    """A forked child (a tokenizer worker) closes its copies of the lock descriptors: the parent keeps the
    locks, and a child that outlives a killed parent does not keep them held."""
    for fd, _depth in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def lock_holder(directory: str | os.PathLike[str]) -> dict | None:
    """What the lock file of ``directory`` says about its holder (``None`` when it is free or unreadable)."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _make_dirs(directory: Path, what: str) -> list[Path]:
    """Create ``directory`` and its missing parents; return the ones created (deepest first)."""
    missing = []
    probe = directory
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{what} {directory} is not a directory; give a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {what} {directory}: {exc.strerror or exc}") from None
    return missing


def _remove_empty(created: list[Path]) -> None:
    for path in created:  # deepest first
        with contextlib.suppress(OSError):
            path.rmdir()


def _acquire(path: Path, directory: Path, what: str) -> int:
    for _attempt in range(50):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot create the lock file {path} ({exc.strerror or exc}); {what} must be a writable directory "
                "and the lock file a regular file"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputLockedError(_busy_message(directory, what, holder)) from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKING:
                os.close(fd)
                raise
            log.warning("the filesystem of %s does not support locks; two writers will not be detected", directory)
            return fd
        # the previous holder may have unlinked the file between our open and our lock
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _record(fd)
            return fd
        os.close(fd)
    raise OutputLockedError(_busy_message(directory, what, None))


def _record(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:400],
            "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    data = (json.dumps(info) + "\n").encode()
    # the lock file is the lock itself, not an output: written in place, under the lock
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _holder(fd: int) -> dict | None:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _busy_message(directory: Path, what: str, holder: dict | None) -> str:
    if holder and "pid" in holder:
        who = f"pid {holder['pid']}"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("command"):
            who += f": {holder['command'][:120]}"
    else:
        who = "a process that is just starting"
    return (f"{what} {directory} is being written by another headstart process ({who}); wait for it to finish or "
            f"choose another {what}")


def _release(key: str, path: Path) -> None:
    fd, _depth = _HELD.pop(key)
    try:
        with contextlib.suppress(OSError):
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)  # while still holding the lock: see the module docstring
    finally:
        os.close(fd)


@contextlib.contextmanager
def main_process_lock(directory: str | os.PathLike[str], *, what: str = "--out") -> Iterator[Path]:
    """:func:`output_lock` taken by the main process only (``RANK`` 0 or unset): the other ranks of a
    distributed run write under rank 0's lock (a second lock of theirs would refuse their own run)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield Path(directory)
        return
    with output_lock(directory, what=what) as held:
        yield held
