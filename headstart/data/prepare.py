"""``prepare``: tokenize a corpus with the teacher's tokenizer into packed token shards.

The run is streamed, parallel, idempotent and resumable:

* inputs are scanned first (sha256 and document count per source); with the tokenizer fingerprint
  and the options they form a *key*. A directory whose manifest has the same key is reused as is.
* documents are assigned to ``train``/``search``/``val`` by a seeded choice of whole documents
  (:mod:`headstart.data.splits`), then tokenized in batches by a pool of processes.
* whenever a split has buffered ``shard_tokens`` tokens, every split's buffer is written out as
  shards (atomically) and ``.progress.json`` records the shards and how many documents are done.
  An interrupted run resumes from there; files no checkpoint recorded are discarded.
* ``manifest.json`` is written last: a directory with a manifest is complete.
* the output directory is locked for the whole run (``.headstart.lock``), so a second ``prepare`` into
  it is refused at once; a symbolic link inside it is refused before anything is written or removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.encode import Encoder, default_workers
from headstart.data.fingerprint import eos_token_id, fingerprint_and_size
from headstart.data.outdir import PROGRESS, check_out_dir, reusable, start_state
from headstart.data.shards import (
    FORMAT,
    MANIFEST,
    SPLITS,
    dtype_for_vocab,
    write_json,
    write_shard,
)
from headstart.data.sources import (
    DEFAULT_MAX_DOC_BYTES,
    Source,
    SourceInfo,
    iter_documents,
    resolve_inputs,
    scan_source,
)
from headstart.data.splits import DEFAULT_SEARCH, DEFAULT_VAL, SplitAssignment, held_out_count
from headstart.errors import ConfigError, DataError
from headstart.io import check_output_tree, output_lock
from headstart.progress import Progress, report

log = logging.getLogger(__name__)

DEFAULT_SHARD_TOKENS = 1 << 26
BATCH_CHARS = 1 << 16  # characters per task sent to a worker (small tasks balance the workers)
BATCH_DOCS = 512
MAX_NAMES = 256  # a split lists its document names in the manifest up to this many documents


@dataclass
class Prepared:
    """The result of :func:`prepare_corpus`: where, whether an existing result was reused, and the manifest."""

    path: Path
    reused: bool
    manifest: dict[str, Any]


def prepare(
    inputs: Sequence[str | os.PathLike[str]],
    tokenizer: Any,
    out_dir: str | os.PathLike[str],
    *,
    tokenizer_source: str,
    text_field: str = "text",
    search_frac: float | None = None,
    val_frac: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Tokenize ``inputs`` with ``tokenizer`` into ``out_dir`` and return ``out_dir``.

    ``inputs``: files, globs, directories (``.txt``/``.md``/``.jsonl`` optionally ``.gz``/``.zst``,
    ``.parquet``), ``hf:NAME[:CONFIG][@SPLIT]`` or ``builtin:shakespeare``. ``search_frac`` and
    ``val_frac`` are fractions of the documents (``< 1``) or numbers of documents (``>= 1``); by
    default 2 % each (at least one document), and 2 / 3 plays for ``builtin:shakespeare`` alone.
    ``workers`` defaults to every core. ``tokenizer_source`` (what the tokenizer was loaded from)
    is recorded in the manifest. See the module docstring for reuse, resume and refusal rules.
    """
    return prepare_corpus(
        inputs,
        tokenizer,
        out_dir,
        tokenizer_source=tokenizer_source,
        text_field=text_field,
        search_frac=search_frac,
        val_frac=val_frac,
        seed=seed,
        workers=workers,
        shard_tokens=shard_tokens,
        max_doc_bytes=max_doc_bytes,
        overwrite=overwrite,
        progress=progress,
    ).path


def prepare_corpus(
    inputs: Sequence[str | os.PathLike[str]],
    tokenizer: Any,
    out_dir: str | os.PathLike[str],
    *,
    tokenizer_source: str,
    text_field: str = "text",
    search_frac: float | None = None,
    val_frac: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Prepared:
    """:func:`prepare`, also telling whether an existing result was reused (and its manifest).

    ``out_dir`` is locked for the run (a second writer is refused at once, see
    :func:`headstart.io.output_lock`) and may hold no symbolic link below it.
    """
    if shard_tokens < 1 or max_doc_bytes < 16:
        raise ConfigError("--shard-tokens must be >= 1 (and max_doc_bytes >= 16)")
    out = Path(out_dir).expanduser()
    sources = resolve_inputs(inputs)
    tok = _tokenizer_facts(tokenizer, tokenizer_source)
    check_out_dir(out, tok["fingerprint"], overwrite)
    options = {"text_field": text_field, "seed": seed, "shard_tokens": shard_tokens, "max_doc_bytes": max_doc_bytes}
    with output_lock(out):
        check_output_tree(out)
        check_out_dir(out, tok["fingerprint"], overwrite)  # again, now that no other writer can change it
        return _prepare_locked(out, sources, tokenizer, tok, options, (search_frac, val_frac), workers, overwrite,
                               progress)


def _prepare_locked(out: Path, sources: list[Source], tokenizer: Any, tok: dict[str, Any], options: dict[str, Any],
                    held_out: tuple[float | None, float | None], workers: int | None, overwrite: bool,
                    progress: Progress | None) -> Prepared:
    """The body of :func:`prepare_corpus`, run while holding the lock of ``out``."""
    text_field, max_doc_bytes, shard_tokens = options["text_field"], options["max_doc_bytes"], options["shard_tokens"]
    infos = []
    for source in sources:
        infos.append(scan_source(source, text_field, max_doc_bytes))
        report(progress, "scan", len(infos), len(sources))
    _check_not_empty(sources, infos)
    n_docs = sum(i.documents for i in infos)
    search, val = _held_out(sources, *held_out)
    assign = SplitAssignment(n_docs, held_out_count(search, n_docs, "search"), held_out_count(val, n_docs, "val"),
                             options["seed"])
    settings, key = _settings(tok, sources, infos, assign, options)
    reused = reusable(out, key, overwrite)
    if reused is not None:
        log.info("reused %s: already prepared from the same inputs, tokenizer and options", out)
        return Prepared(out, True, reused)
    state = start_state(out, key, tok["fingerprint"])
    dtype = dtype_for_vocab(tok["vocab_size"])
    n_workers = (workers or default_workers()) if state["docs_done"] < n_docs else 1
    with Encoder(tokenizer, tok["eos_id"], dtype, n_workers) as encoder:
        batch_chars = min(BATCH_CHARS, shard_tokens)  # a batch never holds much more than a shard
        batches = _batches(sources, infos, text_field, max_doc_bytes, assign, state["docs_done"], batch_chars)
        report(progress, "tokenize", state["docs_done"], n_docs)
        _tokenize(out, state, encoder.map(batches), shard_tokens, dtype, lambda done, tokens: report(
            progress, "tokenize", done, n_docs, f"{tokens:,} tokens"))
    manifest = _manifest(state, key, settings, sources, infos, search, val)
    if manifest["total_tokens"] == 0:
        raise DataError(f"the inputs hold no text ({', '.join(s.name for s in sources[:5])}); nothing to prepare")
    write_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    _warn_replacements(sources)
    return Prepared(out, False, manifest)


def _settings(
    tok: dict[str, Any], sources: list[Source], infos: list[SourceInfo], assign: SplitAssignment, options: dict
) -> tuple[dict[str, Any], str]:
    """Everything the tokens depend on, and its hash (the key of a preparation). The tokenizer's
    source path is not part of it: the same tokenizer from another place gives the same tokens."""
    settings = {
        "format": FORMAT,
        "tokenizer": tok,
        "dtype": dtype_for_vocab(tok["vocab_size"]).name,
        "sources": [[s.kind, i.sha256, i.documents] for s, i in zip(sources, infos)],
        "held_out": assign.counts(),
        **options,
    }
    keyed = {**settings, "tokenizer": {k: v for k, v in tok.items() if k not in ("source", "class")}}
    return settings, hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:32]


def _tokenizer_facts(tokenizer: Any, source: str) -> dict[str, Any]:
    eos = eos_token_id(tokenizer)
    fingerprint, vocab = fingerprint_and_size(tokenizer)
    if not 0 <= eos < vocab:
        raise DataError(f"the tokenizer's EOS id {eos} is outside its vocabulary of {vocab}")
    return {
        "fingerprint": fingerprint,
        "source": str(source),
        "class": type(tokenizer).__name__,
        "vocab_size": vocab,
        "eos_id": eos,
        "eos_token": getattr(tokenizer, "eos_token", None),
    }


def _held_out(sources: list[Source], search: float | None, val: float | None) -> tuple[float, float]:
    if len(sources) == 1 and sources[0].kind == "builtin":
        from headstart.data.builtin import BUILTIN_HELD_OUT

        default = BUILTIN_HELD_OUT[sources[0].name.removeprefix("builtin:")]
    else:
        default = (DEFAULT_SEARCH, DEFAULT_VAL)
    return (default[0] if search is None else search), (default[1] if val is None else val)


def _check_not_empty(sources: list[Source], infos: list[SourceInfo]) -> None:
    empty = [
        s.name for s, i in zip(sources, infos) if i.documents == 0 or (s.kind in ("text", "jsonl") and i.bytes == 0)
    ]
    if len(empty) == len(sources):
        raise DataError(f"the inputs are empty ({', '.join(empty[:5])}); give files that hold text")
    for name in empty:
        log.warning("input %s is empty; it adds no tokens", name)


# -- tokenizing -------------------------------------------------------------------------------------


def _batches(
    sources: list[Source],
    infos: list[SourceInfo],
    text_field: str,
    max_doc_bytes: int,
    assign: SplitAssignment,
    start: int,
    batch_chars: int,
) -> Iterator[tuple[list[tuple[int, str, str]], list[str]]]:
    """Batches of ``(meta, texts)`` for documents ``start…``; earlier documents are read, not tokenized."""
    index, meta, texts, chars = 0, [], [], 0
    for src, info in zip(sources, infos):
        first = index
        for name, text in iter_documents(src, text_field, max_doc_bytes):
            if index >= start:
                meta.append((index, name, assign(index)))
                texts.append(text)
                chars += len(text)
                if chars >= batch_chars or len(texts) >= BATCH_DOCS:
                    yield meta, texts
                    meta, texts, chars = [], [], 0
            index += 1
        if index - first != info.documents:
            raise DataError(
                f"{src.name} changed while it was being prepared ({info.documents} documents, now "
                f"{index - first}); rerun the command"
            )
    if texts:
        yield meta, texts


def _tokenize(out: Path, state: dict[str, Any], results: Iterator, shard_tokens: int, dtype: np.dtype,
              advance: Callable[[int, int], None]) -> None:
    """Route each document's tokens to its split; checkpoint whenever a split fills a shard.
    ``advance(documents done, tokens so far)`` is called after every batch."""
    buffers: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    last = state["docs_done"] - 1
    for meta, ids, lengths in results:
        ends = np.cumsum(lengths)
        for (index, name, split), end, length in zip(meta, ends, lengths):
            last = index
            if length == 0:
                state["empty_documents"] += 1
                continue
            buffers[split].append(ids[end - length : end])
            sizes[split] += int(length)
            record = state["splits"][split]
            record["documents"] += 1
            if record["names"] is not None:
                record["names"] = record["names"] + [name] if len(record["names"]) < MAX_NAMES else None
        advance(last + 1, sum(state["splits"][s]["tokens"] + sizes[s] for s in SPLITS))
        if max(sizes.values()) >= shard_tokens:
            _checkpoint(out, state, buffers, sizes, last + 1, shard_tokens, dtype)
    _checkpoint(out, state, buffers, sizes, last + 1, shard_tokens, dtype)


def _checkpoint(
    out: Path,
    state: dict[str, Any],
    buffers: dict[str, list[np.ndarray]],
    sizes: dict[str, int],
    docs_done: int,
    shard_tokens: int,
    dtype: np.dtype,
) -> None:
    """Write every buffered token as shards of at most ``shard_tokens``, then record the progress.

    If anything fails, the shards of this checkpoint are removed again: the directory then holds
    exactly what ``.progress.json`` records.
    """
    written: list[Path] = []
    try:
        for split in SPLITS:
            if not buffers[split]:
                continue
            tokens = np.concatenate(buffers[split]).astype(dtype, copy=False)
            record = state["splits"][split]
            for start in range(0, len(tokens), shard_tokens):
                piece = tokens[start : start + shard_tokens]
                file = f"{split}/{split}_{len(record['shards']):05d}.bin"
                sha = write_shard(out / file, piece)
                written.append(out / file)
                record["shards"].append({"file": file, "tokens": int(len(piece)), "sha256": sha})
                record["tokens"] += int(len(piece))
            buffers[split].clear()
            sizes[split] = 0
        state["docs_done"] = max(state["docs_done"], docs_done)
        write_json(out / PROGRESS, state)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


# -- the manifest -----------------------------------------------------------------------------------


def _manifest(
    state: dict[str, Any],
    key: str,
    settings: dict[str, Any],
    sources: list[Source],
    infos: list[SourceInfo],
    search: float,
    val: float,
) -> dict[str, Any]:
    from headstart import __version__

    tok = settings["tokenizer"]
    splits = {}
    for split in SPLITS:
        rec = state["splits"][split]
        splits[split] = {"tokens": rec["tokens"], "documents": rec["documents"], "shards": rec["shards"]}
        if rec["names"] is not None:
            splits[split]["names"] = rec["names"]
    return {
        "format": FORMAT,
        "headstart_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "key": key,
        "tokenizer": tok,
        "vocab_size": tok["vocab_size"],
        "eos_id": tok["eos_id"],
        "dtype": settings["dtype"],
        "splits": splits,
        "total_tokens": sum(s["tokens"] for s in splits.values()),
        "documents": sum(i.documents for i in infos),
        "empty_documents": state["empty_documents"],
        "split_settings": {"search": search, "val": val, "seed": settings["seed"], "documents": settings["held_out"]},
        "text_field": settings["text_field"],
        "shard_tokens": settings["shard_tokens"],
        "max_doc_bytes": settings["max_doc_bytes"],
        "sources": [
            {
                "input": s.name,
                "kind": s.kind,
                "sha256": i.sha256,
                "bytes": i.bytes,
                "documents": i.documents,
                "replaced": s.replaced,
            }
            for s, i in zip(sources, infos)
        ],
        "replaced": sum(s.replaced for s in sources),
    }


def _warn_replacements(sources: list[Source]) -> None:
    bad = [s for s in sources if s.replaced]
    if bad:
        where = ", ".join(f"{s.name} ({s.replaced})" for s in bad[:5])
        log.warning(
            "replaced %d undecodable byte sequences with U+FFFD in %s; counted in the manifest under 'replaced'",
            sum(s.replaced for s in bad),
            where,
        )
