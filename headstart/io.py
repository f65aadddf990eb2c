"""The one write path: atomic files and directories, stale temporaries, file hashes, confined paths.

Every output headstart writes goes through here. A file is written to a temporary sibling, fsynced
and renamed over its final name; a directory is built in a temporary sibling and renamed into place
(replacing an existing one by an exchange, so the final name always holds a whole directory). On any
failure the temporary is removed. A temporary's name carries the writer's process id and host
(``.NAME.tmp-PID-HOST-RANDOM``), so :func:`remove_stale_temps` can tell the leftovers of a killed
process from the work of a live one.

Nothing is written onto an existing device node, FIFO or socket (:func:`check_target`), nor through a
symbolic link inside an output tree (:func:`check_output_tree`, :func:`output_path`); a full disk is one
:class:`~headstart.errors.DiskFullError` line whatever library did the write; :func:`output_lock`
(from :mod:`headstart.locking`) keeps a second writer out of an output directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from headstart.errors import DiskFullError, OutputError, UnsafePathError
from headstart.locking import LOCK_NAME as LOCK_NAME  # re-exported: the lock is part of the write path
from headstart.locking import lock_holder as lock_holder
from headstart.locking import output_lock as output_lock

PathLike = str | os.PathLike[str]

_HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()
# .NAME.tmp-PID-HOST-RAND: work in progress; .NAME.old-PID-HOST-RAND: a replaced directory set aside
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def temp_path(final: PathLike, kind: str = "tmp") -> Path:
    """A fresh temporary sibling of ``final`` whose name records this process (see the module doc)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{kind}-{os.getpid()}-{_HOST}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary (or set-aside) name made by :func:`temp_path`."""
    return _TEMP.match(name) is not None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse to fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: PathLike, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on a clean exit fsync it and rename it over
    ``path``; on any failure remove it (``path`` is then untouched)."""
    path = Path(path)
    check_target(path, "file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb" if binary else "x", **({} if binary else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = disk_full(exc, path.parent)
        tmp.unlink(missing_ok=True)
        if full:
            raise _disk_full_error(path, exc) from exc
        raise
    _fsync_dir(path.parent)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def check_target(path: PathLike, kind: str = "file") -> None:
    """Refuse to write ``path`` when it exists and is not what the writer replaces, before anything is written.

    ``kind`` is ``"file"`` (a regular file, or a symbolic link, which the rename replaces without following
    it), ``"regular"`` (a regular file only: for writers that append in place, which would follow a link)
    or ``"directory"`` (a real directory, not a link). A device node, FIFO or socket is never replaced.
    Raises :class:`~headstart.errors.OutputError`.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    allowed = {"file": (stat.S_ISREG, stat.S_ISLNK), "regular": (stat.S_ISREG,), "directory": (stat.S_ISDIR,)}[kind]
    if not any(test(mode) for test in allowed):
        want = "a directory" if kind == "directory" else "a regular file"
        raise OutputError(f"refusing to write {path}: it exists and is {_kind(mode)}, not {want}; "
                          f"give the path of {want} or a new name")


def check_output_tree(root: PathLike, what: str = "--out") -> None:
    """Refuse an output tree that holds a symbolic link anywhere below ``root`` (``root`` itself may be one).

    Writers that add to an existing output directory call this first, so that nothing is written (or
    deleted) through a link that leads out of ``root``. Raises :class:`~headstart.errors.OutputError`
    naming the first link.
    """
    root = Path(root)
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):  # never descends into linked directories
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                raise OutputError(_link_message(root, path, what))


def output_path(root: PathLike, relative: PathLike, what: str = "--out") -> Path:
    """``root / relative`` after checking that no existing component below ``root`` is a symbolic link
    (so a write there stays inside ``root``); raises :class:`~headstart.errors.OutputError`."""
    root, relative = Path(root), Path(relative)
    if relative.is_absolute() or ".." in relative.parts:
        raise OutputError(f"{relative} is not a path inside {what} {root}")
    path = root
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            raise OutputError(_link_message(root, path, what))
    return path


def _link_message(root: Path, path: Path, what: str) -> str:
    return (f"{path} inside {what} {root} is a symbolic link (to {os.readlink(path)}); headstart writes only inside "
            f"{what}: remove the link or choose another {what}")


_DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")
_FULL_BYTES = 1 << 20


def disk_full(exc: BaseException, where: PathLike) -> bool:
    """Whether ``exc``, raised while writing into directory ``where``, means that the disk is full.

    Writers report a full disk differently (``OSError(ENOSPC)``; safetensors' Rust text; numpy's short
    write; torch's zip writer), so besides the error itself the filesystem's free space is looked at.
    """
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    if any(text in str(exc) for text in _DISK_FULL_TEXT):
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        fs = os.statvfs(where)
    except OSError:
        return False
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail
    return free * fs.f_frsize < _FULL_BYTES


def _disk_full_error(path: Path, exc: BaseException) -> DiskFullError:
    reason = getattr(exc, "strerror", None) or "No space left on device"
    return DiskFullError(f"the disk is full while writing {path} ({reason}); nothing partial was kept: free space "
                         f"on {path.parent} and rerun the command")


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_file(path, binary=True) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: PathLike, obj: Any, *, indent: int | None = 1, default: Any = None) -> Path:
    """Write ``obj`` as JSON (UTF-8, a final newline) to ``path`` atomically; returns ``path``.

    ``default`` is :func:`json.dumps`'s hook for values JSON lacks (e.g. ``str``).
    """
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=default) + "\n")


def write_yaml(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as YAML (keys in their order, short lists inline) to ``path`` atomically."""
    return write_text(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=None, width=120))


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _swap_in(tmp: Path, final: Path) -> None:
    """Put directory ``tmp`` at ``final``, whose old directory is removed after the swap."""
    if _exchange(tmp, final):
        _fsync_dir(final.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # now the old directory
        return
    # two renames; a crash between them leaves the old directory set aside under an ``.old-`` name,
    # which remove_stale_temps puts back while the final name is missing
    aside = temp_path(final, "old")
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(aside, final)
        raise
    _fsync_dir(final.parent)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final``; on a clean exit fsync everything in it and
    rename it to ``final``. On any failure it is removed and ``final`` is untouched.

    ``final`` must not exist unless ``replace``; then the old directory is swapped out (never a moment
    without a whole directory at ``final``) and deleted.
    """
    final = Path(final)
    check_target(final, "directory")
    if final.exists() and not replace:
        raise FileExistsError(errno.EEXIST, "already exists", str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists() and replace:
            _swap_in(tmp, final)
        else:
            if final.exists():
                raise FileExistsError(errno.EEXIST, "appeared while it was being written", str(final))
            os.rename(tmp, final)
            _fsync_dir(final.parent)
    except BaseException as exc:
        full = disk_full(exc, final.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise _disk_full_error(final, exc) from exc
        raise


@contextlib.contextmanager
def scratch_dir(beside: PathLike) -> Iterator[Path]:
    """A fresh temporary directory beside ``beside`` (named by :func:`temp_path`), removed on exit."""
    tmp = temp_path(beside)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(parent: PathLike, prefix: str = "") -> list[Path]:
    """Remove the temporaries in ``parent`` left by dead processes of this host; returns what went.

    Only names made by :func:`temp_path` that start with ``prefix`` are considered; those of live
    processes (including this one) and of other hosts are kept. A directory set aside by an
    interrupted replacement is put back if its final name is missing, else removed.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    for entry in sorted(parent.iterdir()):
        m = _TEMP.match(entry.name)
        if m is None or not entry.name.startswith(prefix) or m["host"] != _HOST or pid_alive(int(m["pid"])):
            continue
        final = parent / m["name"]
        if m["kind"] == "old" and not final.exists():
            os.rename(entry, final)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """The objects of a JSONL file; a line that does not parse (one torn by a kill) is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def confined(base: PathLike, relative: Any) -> Path:
    """``base / relative`` for a ``file`` entry of a manifest in ``base``; raises
    :class:`~headstart.errors.UnsafePathError` when it is not a relative path that stays inside ``base``
    (an absolute path, ``..``, or a link out)."""
    base = Path(base)
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
        raise UnsafePathError(_escape_message(base, relative))
    path = base / relative
    root = base.resolve()
    if not path.resolve().is_relative_to(root) or path.resolve() == root:
        raise UnsafePathError(_escape_message(base, relative))
    return path


def _escape_message(base: Path, relative: Any) -> str:
    return (f"the entry {relative!r} in {base} does not name a file inside that directory; the manifest was "
            "altered or corrupted: rebuild the directory with the command that made it")
