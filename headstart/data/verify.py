"""What a prepared directory records is checked before its tokens are used.

:func:`check_manifest` checks the manifest's own fields and their agreement (dtype with vocabulary,
EOS inside the vocabulary, token counts that add up, the top-level fields equal the tokenizer's).
:func:`verify_shard` reads a shard once per process: its sha256 must be the recorded one and its
largest id must lie inside the vocabulary. A shard already verified in this process (same file,
size and modification time) is not read again, so a training run that opens its data several times
pays once.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import DataError

DTYPES = ("uint16", "uint32")
_CHUNK = 1 << 24
_SHA = re.compile(r"^[0-9a-f]{64}$")
_verified: set[tuple[str, int, int, int, int]] = set()


def _redo(path: Any) -> str:
    return f"rerun `headstart prepare --overwrite` for {path}"


def _int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_manifest(path: Path, manifest: dict[str, Any], splits: tuple[str, ...]) -> None:
    """Raise one :class:`DataError` line naming the first field of ``manifest`` (read from ``path``) that is
    malformed or disagrees with another."""

    def bad(field: str, what: str) -> DataError:
        return DataError(f"{path}: {field} {what}; the manifest was altered or damaged: {_redo(path.parent)}")

    vocab, eos, dtype = manifest.get("vocab_size"), manifest.get("eos_id"), manifest.get("dtype")
    if not _int(vocab, 1):
        raise bad("vocab_size", f"is {vocab!r}, not a positive integer")
    if not _int(eos) or eos >= vocab:
        raise bad("eos_id", f"is {eos!r}, not an id inside the vocabulary of {vocab}")
    if dtype not in DTYPES:
        raise bad("dtype", f"is {dtype!r}; it must be one of {', '.join(DTYPES)}")
    want = "uint16" if vocab <= 1 << 16 else "uint32"
    if dtype != want:
        raise bad("dtype", f"is {dtype} but a vocabulary of {vocab} is stored as {want}")
    tok = manifest.get("tokenizer")
    if not isinstance(tok, dict) or not isinstance(tok.get("fingerprint"), str):
        raise bad("tokenizer", "has no fingerprint")
    for key, value in (("vocab_size", vocab), ("eos_id", eos)):
        if key in tok and tok[key] != value:
            raise bad(key, f"is {value} but the tokenizer entry records {tok[key]!r}")
    total = 0
    for split in splits:
        total += _check_split(manifest["splits"][split], f"splits.{split}", bad)
    if "total_tokens" in manifest and manifest["total_tokens"] != total:
        raise bad("total_tokens", f"is {manifest['total_tokens']!r} but the splits hold {total}")


def _check_split(record: dict[str, Any], where: str, bad: Any) -> int:
    shards = record.get("shards")
    if not isinstance(shards, list):
        raise bad(f"{where}.shards", "is not a list")
    count = 0
    for i, shard in enumerate(shards):
        here = f"{where}.shards[{i}]"
        if not isinstance(shard, dict) or not isinstance(shard.get("file"), str):
            raise bad(here, "names no file")
        if not _int(shard.get("tokens")):
            raise bad(f"{here}.tokens", f"is {shard.get('tokens')!r}, not a token count")
        if not isinstance(shard.get("sha256"), str) or not _SHA.match(shard["sha256"]):
            raise bad(f"{here}.sha256", "is not a sha256")
        count += shard["tokens"]
    if record.get("tokens") != count:
        raise bad(f"{where}.tokens", f"is {record.get('tokens')!r} but its shards hold {count}")
    return count


def verify_shard(path: Path, dtype: np.dtype, sha256: str, vocab_size: int) -> None:
    """Check a shard's bytes against its recorded ``sha256`` and its ids against ``vocab_size``, once per
    process per file version; raises :class:`DataError` naming the shard."""
    st = os.stat(path)
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _verified:
        return
    digest, top = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK - _CHUNK % dtype.itemsize):
            digest.update(block)
            ids = np.frombuffer(block, dtype=dtype)
            if ids.size:
                top = max(top, int(ids.max()))
    if digest.hexdigest() != sha256:
        raise DataError(f"shard {path} does not match the sha256 its manifest records (it was altered or damaged on "
                        f"disk); {_redo(path.parent.parent)}")
    if top >= vocab_size:
        raise DataError(f"shard {path} holds token id {top}, outside the manifest's vocabulary of {vocab_size}; "
                        f"the manifest or the shard was altered: {_redo(path.parent.parent)}")
    _verified.add(key)


def forget_verified() -> None:
    """Forget which shards this process verified (the next open reads them again)."""
    _verified.clear()
