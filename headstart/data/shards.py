"""Token shards on disk: atomic writes, the manifest, and memory-mapped reading.

A prepared directory holds ``manifest.json`` and one folder per split (``train``, ``search``,
``val``) of flat little-endian token arrays (``<split>_<NNNNN>.bin``, ``uint16`` when the vocabulary
fits, else ``uint32``). A split's token stream is its shards concatenated in manifest order.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from headstart import io
from headstart.data.verify import check_manifest, verify_shard
from headstart.errors import DataError, DiskFullError
from headstart.io import atomic_file

SPLITS: tuple[str, ...] = ("train", "search", "val")
MANIFEST = "manifest.json"
FORMAT = "headstart-tokens/1"
_CHUNK_BYTES = 1 << 22
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits in 16 bits, else ``uint32``."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def disk_full_error(path: Path, exc: BaseException) -> DataError:
    """The one-line error for a full disk (or exhausted quota) while writing ``path``."""
    reason = getattr(exc, "strerror", None) or "No space left on device"
    return DataError(
        f"the disk is full while writing {path} ({reason}); free space on {path.parent} "
        "and rerun the same command: completed shards are kept and the run resumes"
    )


def _write_chunk(fh, data: memoryview) -> None:
    """Write one chunk (a seam where tests simulate a full disk)."""
    fh.write(data)


def write_shard(path: Path, tokens: np.ndarray) -> str:
    """Write ``tokens`` to ``path`` atomically (temp file, fsync, rename); return the file's sha256.

    On any failure the temporary file is removed, so no partial shard is ever left behind.
    """
    digest = hashlib.sha256()
    data = memoryview(np.ascontiguousarray(tokens)).cast("B")
    try:
        with atomic_file(path, binary=True) as fh:
            for start in range(0, len(data), _CHUNK_BYTES):
                chunk = data[start : start + _CHUNK_BYTES]
                digest.update(chunk)
                _write_chunk(fh, chunk)
    except DiskFullError as exc:
        raise disk_full_error(path, exc.__cause__ or exc) from exc
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise disk_full_error(path, exc) from exc
        raise
    return digest.hexdigest()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically; a full disk is a :class:`DataError` that says how
    to resume."""
    try:
        io.write_json(path, data)
    except DiskFullError as exc:
        raise disk_full_error(path, exc.__cause__ or exc) from exc
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise disk_full_error(path, exc) from exc
        raise


def read_manifest(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a prepared directory.

    Raises :class:`DataError` if the directory or its manifest is missing, or the manifest is not
    valid JSON of this format, or its fields are malformed or disagree (see
    :func:`headstart.data.verify.check_manifest`).
    """
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        if (Path(data_dir) / ".progress.json").is_file():
            raise DataError(f"{data_dir} is an unfinished preparation; rerun the same `headstart prepare` to finish it")
        raise DataError(
            f"{data_dir} holds no {MANIFEST}; create it with `headstart prepare --tokenizer T INPUTS --out DIR`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path} is corrupt ({reason}); rerun `headstart prepare --overwrite` into this directory"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "splits" not in manifest:
        raise DataError(f"{path} is not a headstart token manifest ({FORMAT}); rerun `headstart prepare --overwrite`")
    splits = manifest["splits"] if isinstance(manifest["splits"], dict) else {}
    missing = [s for s in SPLITS if not isinstance(splits.get(s), dict)]
    if missing:
        raise DataError(f"{path} lacks the split(s) {', '.join(missing)}; rerun `headstart prepare --overwrite`")
    check_manifest(path, manifest, SPLITS)
    return manifest


class TokenStream:
    """The token stream of one split: its shards, memory-mapped, read as one virtual array.

    Every shard is verified against the manifest on its first open in this process (sha256, ids inside
    the vocabulary, see :mod:`headstart.data.verify`) unless ``verify`` is off; the split must end with
    the manifest's EOS id, as every prepared document does.
    """

    def __init__(self, data_dir: str | os.PathLike[str], split: str, manifest: dict[str, Any] | None = None,
                 verify: bool = True):
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        self.manifest = manifest if manifest is not None else read_manifest(data_dir)
        self.dtype = np.dtype(self.manifest["dtype"])
        vocab = self.manifest["vocab_size"] if verify else None
        self.shards: list[np.ndarray] = []
        self.offsets: list[int] = [0]
        for shard in self.manifest["splits"][split]["shards"]:
            path = io.confined(data_dir, shard["file"])
            self.shards.append(map_shard(path, self.dtype, int(shard["tokens"]), shard.get("sha256"), vocab))
            self.offsets.append(self.offsets[-1] + int(shard["tokens"]))
        eos = self.manifest.get("eos_id")
        if verify and len(self) and int(self.shards[-1][-1]) != eos:
            raise DataError(f"split {split!r} of {data_dir} does not end with the manifest's EOS id {eos}; the "
                            f"manifest or its shards were altered: rerun `headstart prepare --overwrite` for it")

    def __len__(self) -> int:
        return self.offsets[-1]

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` of the stream (a copy; may span shards)."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"tokens [{start}, {start + length}) outside a stream of {len(self)}")
        parts, pos, end = [], start, start + length
        while pos < end:
            i = bisect.bisect_right(self.offsets, pos) - 1
            lo = pos - self.offsets[i]
            take = min(end, self.offsets[i + 1]) - pos
            parts.append(self.shards[i][lo : lo + take])
            pos += take
        return np.concatenate(parts) if len(parts) != 1 else np.array(parts[0])


def map_shard(path: Path, dtype: np.dtype, tokens: int, sha256: str | None = None,
              vocab_size: int | None = None) -> np.ndarray:
    """Memory-map one shard read-only, after checking that its size matches the manifest; with ``sha256``
    and ``vocab_size`` also its bytes and ids (once per process, :func:`~headstart.data.verify.verify_shard`)."""
    if not path.is_file():
        raise DataError(f"shard {path} is missing; rerun `headstart prepare --overwrite` for this directory")
    size = path.stat().st_size
    if size != tokens * dtype.itemsize:
        raise DataError(
            f"shard {path} has {size} bytes, expected {tokens * dtype.itemsize}; it is truncated or altered: "
            "rerun `headstart prepare --overwrite` for this directory"
        )
    if sha256 is not None and vocab_size is not None:
        verify_shard(path, dtype, sha256, vocab_size)
    return np.memmap(path, dtype=dtype, mode="r", shape=(tokens,))


def open_split(data_dir: str | os.PathLike[str], split: str) -> np.ndarray:
    """All tokens of ``split`` as one 1-D array (``uint16`` or ``uint32``).

    A single-shard split is returned as a read-only memmap; several shards are concatenated into
    memory. An empty split gives an empty array.
    """
    stream = TokenStream(data_dir, split)
    if not stream.shards:
        return np.empty(0, dtype=stream.dtype)
    if len(stream.shards) == 1:
        return stream.shards[0]
    return np.concatenate(stream.shards)
