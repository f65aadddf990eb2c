"""Tokenize batches of documents, in this process or in a pool of worker processes.

Workers get the tokenizer once (forked workers inherit it; spawned ones rebuild it from its JSON)
and then only batches of texts; results come back in submission order, with at most a few batches in
flight, so memory stays bounded whatever the corpus size. Every non-empty document gets the EOS id
appended; the token ids are exactly those of ``tokenizer.encode(text, add_special_tokens=False)``.
A worker that dies (the OOM killer, ``kill -9``) fails the run with a :class:`DataError` at once (a
process pool executor marks itself broken; a plain ``multiprocessing.Pool`` would wait forever for
the lost batch); ``prepare`` resumes from its last finished shard.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from headstart.errors import DataError

log = logging.getLogger(__name__)
_worker: dict[str, Any] = {}


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _backend(tokenizer: Any):
    """The Rust ``tokenizers.Tokenizer`` behind ``tokenizer``, or ``None`` for a slow tokenizer."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    return getattr(tokenizer, "backend_tokenizer", None)


def _encode_texts(
    backend: Any, tokenizer: Any, texts: list[str], eos: int, dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ids (EOS after every non-empty document) and per-document lengths."""
    if backend is not None:
        fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
        ids = [e.ids for e in fast(texts, add_special_tokens=False)]
    else:
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    flat: list[int] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, (text, doc) in enumerate(zip(texts, ids)):
        if text:
            flat.extend(doc)
            flat.append(eos)
            lengths[i] = len(doc) + 1
    return np.asarray(flat, dtype=np.int64).astype(dtype), lengths


def _init_worker(tokenizer_json: str | None, eos: int, dtype: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    if tokenizer_json is not None:  # spawned: rebuild the tokenizer; forked: it is inherited
        from tokenizers import Tokenizer

        _worker["backend"] = Tokenizer.from_str(tokenizer_json)
    _worker.update(eos=eos, dtype=dtype)


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _encode_texts(_worker["backend"], None, texts, _worker["eos"], _worker["dtype"])


class Encoder:
    """Tokenizes batches with ``workers`` processes (``workers <= 1``: in this process)."""

    def __init__(self, tokenizer: Any, eos: int, dtype: np.dtype, workers: int):
        self.tokenizer, self.eos, self.dtype = tokenizer, int(eos), np.dtype(dtype).str
        self.backend = _backend(tokenizer)
        self.workers = max(1, int(workers)) if self.backend is not None else 1
        if self.backend is None and workers > 1:
            log.info("%s is a slow (Python) tokenizer: tokenizing in one process", type(tokenizer).__name__)
        self._pool = None

    def __enter__(self) -> Encoder:
        if self.workers > 1:
            # fork where the platform has it (fast, and works from unguarded scripts); the children only
            # run the Rust tokenizer. Elsewhere spawn: the worker module imports nothing heavy.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            saved = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # no fork warning; one process per core already
            _worker["backend"] = self.backend  # what forked workers inherit
            tokenizer_json = None if method == "fork" else self.backend.to_str()
            try:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker,
                    initargs=(tokenizer_json, self.eos, self.dtype),
                )
            finally:
                if saved is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = saved
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # at most a few small batches are in flight
            self._pool = None
        _worker.clear()

    def map(self, batches: Iterable[tuple[Any, list[str]]]) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """``(meta, texts)`` -> ``(meta, ids, lengths)``, in order; ``meta`` never leaves this process."""
        if self._pool is None:
            for meta, texts in batches:
                yield (meta, *_encode_texts(self.backend, self.tokenizer, texts, self.eos, self.dtype))
            return
        pending: deque[tuple[Any, Future]] = deque()
        for meta, texts in batches:
            pending.append((meta, self._submit(texts)))
            if len(pending) >= 2 * self.workers + 1:
                meta0, res = pending.popleft()
                yield (meta0, *_result(res))
        while pending:
            meta0, res = pending.popleft()
            yield (meta0, *_result(res))

    def _submit(self, texts: list[str]) -> Future:
        try:
            return self._pool.submit(_encode_in_worker, texts)
        except BrokenProcessPool:
            raise DataError(_DEAD) from None


_DEAD = ("a tokenizer worker process died (killed, or out of memory); rerun prepare (it resumes from the last "
         "finished shard), with fewer --workers if memory is short")


def _result(future: Future) -> tuple[np.ndarray, np.ndarray]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise DataError(_DEAD) from None
