"""Corpus inputs: files, globs and directories of text, JSONL and Parquet, Hugging Face datasets, builtins.

Every input becomes a :class:`Source`. A source is scanned once (content hash and document count)
and then streamed document by document as ``(name, text)``; nothing holds the whole corpus.

What a document is: a ``.txt``/``.md`` file (files larger than ``max_doc_bytes`` are cut at blank
lines into several documents), a JSONL line, a Parquet row, a dataset row, or a builtin text.
Bytes that are not valid UTF-8 are replaced with U+FFFD and counted, never fatal.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from headstart.data.builtin import builtin_corpus, builtin_info
from headstart.errors import DataError

TEXT_SUFFIXES = (".txt", ".md", ".text", ".markdown")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
COMPRESSIONS = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
DEFAULT_MAX_DOC_BYTES = 16 << 20
_FFFD = "\ufffd"
_FFFD_BYTES = _FFFD.encode("utf-8")


@dataclass
class Source:
    """One input: ``kind`` is ``text``, ``jsonl``, ``parquet``, ``hf`` or ``builtin``."""

    name: str
    kind: str
    path: Path | None = None
    compression: str | None = None
    replaced: int = 0  # U+FFFD replacements made while reading (undecodable byte sequences)


@dataclass(frozen=True)
class SourceInfo:
    """What a scan learns about a source: a content hash, its size and its number of documents."""

    sha256: str
    bytes: int
    documents: int


def _classify(path: Path) -> Source | None:
    name = path.name.lower()
    compression = None
    for suffix, comp in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = comp, name[: -len(suffix)]
    if name.endswith(TEXT_SUFFIXES):
        return Source(str(path), "text", path, compression)
    if name.endswith(JSONL_SUFFIXES):
        return Source(str(path), "jsonl", path, compression)
    if name.endswith(".parquet") and compression is None:
        return Source(str(path), "parquet", path)
    return None


def _supported() -> str:
    return ", ".join(TEXT_SUFFIXES + JSONL_SUFFIXES + (".parquet",)) + " (text and JSONL also .gz/.zst)"


def resolve_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Source]:
    """Expand files, globs, directories (recursively), ``hf:NAME[:CONFIG][@SPLIT]`` and
    ``builtin:NAME`` into sources, in a deterministic order. Missing or unsupported inputs raise
    :class:`DataError`."""
    sources: list[Source] = []
    seen: set[str] = set()
    for item in inputs:
        text = str(item)
        if text.startswith("builtin:"):
            from headstart.data.builtin import check_builtin

            check_builtin(text.removeprefix("builtin:"))
            found = [Source(text, "builtin")]
        elif text.startswith("hf:"):
            found = [Source(text, "hf")]
        else:
            found = _expand_path(text)
        for src in found:
            key = str(src.path.resolve()) if src.path else src.name
            if key not in seen:
                seen.add(key)
                sources.append(src)
    if not sources:
        raise DataError("no inputs given; pass files, directories or globs, hf:NAME, or --builtin shakespeare")
    return sources


def _expand_path(text: str) -> list[Source]:
    path = Path(text).expanduser()
    if any(c in text for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [s for p in matches if p.is_file() and (s := _classify(p))]
        if not files:
            raise DataError(f"no supported files match {text}; supported: {_supported()}")
        return files
    if path.is_dir():
        files = [s for p in sorted(path.rglob("*")) if p.is_file() and (s := _classify(p))]
        if not files:
            raise DataError(f"directory {path} holds no supported files; supported: {_supported()}")
        return files
    if not path.exists():
        raise DataError(f"input {text} does not exist; pass existing files, directories or globs")
    src = _classify(path)
    if src is None:
        raise DataError(f"input {path} has an unsupported type; supported: {_supported()}")
    return [src]


# -- decoding ---------------------------------------------------------------------------------------


def decode(data: bytes) -> tuple[str, int]:
    """UTF-8 text of ``data`` and the number of undecodable byte sequences replaced with U+FFFD."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        # A valid encoded U+FFFD (EF BF BD) can never be part of an invalid sequence, so the
        # difference counts exactly the replacements the decoder made.
        return text, text.count(_FFFD) - data.count(_FFFD_BYTES)


def _open_binary(src: Source) -> IO[bytes]:
    try:
        path = Path(src.path or src.name)
        if src.compression == "gz":
            return gzip.open(path, "rb")
        if src.compression == "zst":
            try:
                import zstandard
            except ImportError:
                raise DataError(
                    f"{src.path} is zstd-compressed; install the extra: pip install 'headstart[zstd]'"
                ) from None
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"input {src.path} does not exist (was it removed?)") from None


def _read_full(fh: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        block = fh.read(left)
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def _text_pieces(fh: IO[bytes], max_bytes: int) -> Iterator[bytes]:
    """The file as byte pieces of at most ``max_bytes``, cut after a blank line (else a newline,
    else a UTF-8 character boundary). A file that fits is one piece; an empty file is one empty piece."""
    buf = _read_full(fh, max_bytes)
    while True:
        more = _read_full(fh, 1)
        if not more:
            yield buf
            return
        buf += more
        cut = buf.rfind(b"\n\n", 0, max_bytes) + 2
        if cut < 2:
            cut = buf.rfind(b"\n", 0, max_bytes) + 1
        if cut < 1:
            cut = max_bytes
            while cut > 1 and 0x80 <= buf[cut] < 0xC0:  # do not split a multi-byte character
                cut -= 1
        yield buf[:cut]
        buf = buf[cut:] + _read_full(fh, max_bytes - (len(buf) - cut))


# -- scanning and streaming -------------------------------------------------------------------------


def scan_source(src: Source, text_field: str, max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES) -> SourceInfo:
    """Hash ``src`` and count its documents (one pass over the bytes, no tokenization)."""
    if src.kind == "builtin":
        return SourceInfo(*builtin_info(src.name.removeprefix("builtin:")))
    if src.kind == "hf":
        ds = _hf_dataset(src.name, text_field)
        return SourceInfo(str(getattr(ds, "_fingerprint", "")), 0, len(ds))
    from headstart.io import sha256_file

    path = Path(src.path or src.name)
    if not path.is_file():
        raise DataError(f"input {path} does not exist (was it removed?)")
    sha, size = sha256_file(path), path.stat().st_size
    if src.kind == "parquet":
        return SourceInfo(sha, size, _parquet_file(path, text_field).metadata.num_rows)
    try:
        with _open_binary(src) as fh:
            if src.kind == "text":
                count = sum(1 for _ in _text_pieces(fh, max_doc_bytes))
            else:
                count = sum(1 for line in fh if line.strip())
    except _read_errors() as exc:
        raise DataError(f"could not read {path}: {exc}; is it truncated or not really {src.compression}?") from None
    return SourceInfo(sha, size, count)


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged compressed file raises while it is read."""
    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error]
    zstd = sys.modules.get("zstandard")
    if zstd is not None:
        errors.append(zstd.ZstdError)
    return tuple(errors)


def iter_documents(
    src: Source, text_field: str, max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES
) -> Iterator[tuple[str, str]]:
    """Stream ``(name, text)`` documents of ``src``, in the order :func:`scan_source` counted them.

    Replacements of undecodable bytes are added to ``src.replaced``. A JSONL line that is not an
    object with a string ``text_field`` raises :class:`DataError` naming file, line and field.
    """
    if src.kind == "builtin":
        yield from builtin_corpus(src.name.removeprefix("builtin:"))
    elif src.kind == "hf":
        yield from _iter_hf(src, text_field)
    elif src.kind == "parquet":
        yield from _iter_parquet(src, text_field)
    elif src.kind == "text":
        with _open_binary(src) as fh:
            pieces = _text_pieces(fh, max_doc_bytes)
            first = next(pieces)
            nxt = next(pieces, None)
            if nxt is None:
                yield src.name, _count(src, first)
                return
            yield f"{src.name}#0", _count(src, first)
            yield f"{src.name}#1", _count(src, nxt)
            for k, piece in enumerate(pieces, 2):
                yield f"{src.name}#{k}", _count(src, piece)
    else:
        yield from _iter_jsonl(src, text_field)


def _count(src: Source, data: bytes) -> str:
    text, replaced = decode(data)
    src.replaced += replaced
    return text


def _iter_jsonl(src: Source, field: str) -> Iterator[tuple[str, str]]:
    with _open_binary(src) as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            where = f"{src.name}:{lineno}"
            try:
                obj = json.loads(_count(src, raw))
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
            if not isinstance(obj, dict) or field not in obj:
                keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
                raise DataError(f"{where}: no field {field!r} in this JSON line (it has: {keys}); pass --text-field")
            yield where, _text_value(obj[field], where, field)


def _text_value(value: Any, where: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} is a {type(value).__name__}, not text; pass --text-field")
    return value


def _parquet_file(path: Path, field: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path} is Parquet; install the extra: pip install 'headstart[parquet]'") from None
    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise DataError(f"{path}: no column {field!r} (it has: {', '.join(names)}); pass --text-field")
    return pf


def _iter_parquet(src: Source, field: str) -> Iterator[tuple[str, str]]:
    row = 0
    for batch in _parquet_file(Path(src.path or src.name), field).iter_batches(batch_size=1024, columns=[field]):
        for value in batch.column(0).to_pylist():
            where = f"{src.name}#{row}"
            yield where, _text_value(value, where, field)
            row += 1


def _parse_hf(spec: str) -> tuple[str, str | None, str]:
    body = spec.removeprefix("hf:")
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    if not name:
        raise DataError(
            f"{spec!r}: write a dataset as hf:NAME[:CONFIG][@SPLIT], e.g. hf:wikitext:wikitext-2-raw-v1@train"
        )
    return name, config or None, split or "train"


def _hf_dataset(spec: str, field: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec} needs the datasets extra: pip install 'headstart[datasets]'") from None
    name, config, split = _parse_hf(spec)
    try:
        if Path(name).expanduser().is_dir():
            ds = datasets.load_from_disk(str(Path(name).expanduser()))
            ds = ds[split] if isinstance(ds, dict) or hasattr(ds, "keys") else ds
        else:
            ds = datasets.load_dataset(name, config, split=split)
    except (OSError, ValueError, KeyError, ConnectionError) as exc:
        raise DataError(f"could not load dataset {spec} ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    if field not in ds.column_names:
        raise DataError(f"{spec}: no column {field!r} (it has: {', '.join(ds.column_names)}); pass --text-field")
    return ds


def _iter_hf(src: Source, field: str) -> Iterator[tuple[str, str]]:
    row = 0
    for batch in _hf_dataset(src.name, field).iter(batch_size=1024):
        for value in batch[field]:
            where = f"{src.name}#{row}"
            yield where, _text_value(value, where, field)
            row += 1
