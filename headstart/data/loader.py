"""Fixed-length windows of a prepared split, for training (:class:`WindowLoader`) and scoring
(:func:`fixed_windows`).

A split's token stream (documents separated by EOS) is cut into non-overlapping windows of
``seq_len + 1`` tokens (inputs plus the shifted targets); the tail shorter than a window is unused.
The loader walks an endless sequence of windows: epoch ``e`` is a permutation of all windows seeded
by ``(seed, e)`` (or the windows in order when ``shuffle`` is off), and epochs follow each other
without a gap. Step ``k`` takes the ``world_size * batch_size`` windows at positions
``[k * G, (k + 1) * G)`` of that sequence and rank ``r`` gets the ``r``-th block of ``batch_size``,
so ranks never share a window within a step. The state is one number, the position, which means the
same on every rank; restoring it replays exactly the windows an uninterrupted run would have seen.

Reading is off the training step's critical path: a worker thread reads (and, with CUDA, pins) the
next ``prefetch`` batches while the step computes. What a batch holds depends only on its position,
so prefetching changes no batch, and the position advances only when a batch is handed out.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from headstart.data.shards import TokenStream
from headstart.errors import ConfigError, DataError


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _too_small(data_dir: Any, split: str, have: int, need: int, what: str) -> DataError:
    return DataError(
        f"split {split!r} of {data_dir} has {have} tokens but {what} needs {need}; prepare more data (or a larger "
        f"--{split}-frac), or use fewer or shorter windows"
    )


class WindowLoader:
    """Batches ``LongTensor[batch_size, seq_len + 1]`` of one split, seeded and resumable.

    With ``epochs=None`` (default) iteration never ends; with ``epochs=n`` it stops before the first
    step that would reach past ``n`` epochs. Iterating again continues where the last step ended.
    ``prefetch`` batches are read ahead in a thread (0: read in the caller); ``pin_memory`` (default:
    when CUDA is available) pins them, so the copy to the GPU can run asynchronously.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        split: str,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
        prefetch: int = 1,
        pin_memory: bool | None = None,
    ):
        self.seq_len, self.batch_size = _positive("seq_len", seq_len), _positive("batch_size", batch_size)
        self.world_size = _positive("world_size", world_size)
        if not 0 <= rank < self.world_size:
            raise ConfigError(f"rank {rank} is outside 0…{self.world_size - 1} (world_size {self.world_size})")
        self.rank, self.seed, self.shuffle, self.split = int(rank), int(seed), bool(shuffle), split
        self.epochs = None if epochs is None else _positive("epochs", epochs)
        self.stream = TokenStream(data_dir, split)
        self.window = self.seq_len + 1
        self.windows_per_epoch = len(self.stream) // self.window
        if self.windows_per_epoch == 0:
            raise _too_small(
                data_dir, split, len(self.stream), self.window, f"one window of seq_len + 1 = {self.window}"
            )
        self._key = self.stream.manifest.get("key")
        self._position = 0
        self._perms: dict[int, np.ndarray] = {}
        self._perms_lock = threading.Lock()  # the reading thread and the caller share the permutation cache
        if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
            raise ConfigError(f"prefetch must be a non-negative integer, got {prefetch!r}")
        self.prefetch = int(prefetch)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)

    @property
    def global_batch(self) -> int:
        """Windows consumed per step by all ranks together."""
        return self.world_size * self.batch_size

    @property
    def epoch(self) -> int:
        """The epoch the next window comes from (0-based)."""
        return self._position // self.windows_per_epoch

    @property
    def position(self) -> int:
        """Windows consumed so far by all ranks (the step count times the global batch)."""
        return self._position

    def _order(self, epoch: int) -> np.ndarray:
        with self._perms_lock:
            if epoch not in self._perms:
                if len(self._perms) >= 2:
                    self._perms.pop(min(self._perms))
                rng = np.random.default_rng([self.seed, epoch])
                self._perms[epoch] = rng.permutation(self.windows_per_epoch)
            return self._perms[epoch]

    def window_ids(self, start: int, count: int) -> np.ndarray:
        """Indices of the windows at positions ``[start, start + count)`` of the endless sequence."""
        pos = np.arange(start, start + count, dtype=np.int64)
        if not self.shuffle:
            return pos % self.windows_per_epoch
        epochs, offsets = np.divmod(pos, self.windows_per_epoch)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._order(int(epoch))[offsets[mask]]
        return out

    def read_windows(self, ids: np.ndarray) -> torch.Tensor:
        """The windows ``ids`` as a ``LongTensor[len(ids), seq_len + 1]``."""
        rows = [self.stream.read(int(i) * self.window, self.window) for i in ids]
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def _batch_at(self, position: int) -> torch.Tensor:
        """This rank's batch of the step that starts at ``position`` (pinned when asked)."""
        batch = self.read_windows(self.window_ids(position + self.rank * self.batch_size, self.batch_size))
        return batch.pin_memory() if self.pin_memory else batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        limit = None if self.epochs is None else self.epochs * self.windows_per_epoch
        pool = ThreadPoolExecutor(1, thread_name_prefix="headstart-loader") if self.prefetch else None
        ahead: dict[int, Future] = {}  # reads in flight, by the position they are for
        try:
            while limit is None or self._position + self.global_batch <= limit:
                position = self._position  # read here, not cached: load_state_dict may have moved it
                future = ahead.pop(position, None)
                batch = future.result() if future is not None else self._batch_at(position)
                self._position = position + self.global_batch
                if pool is not None:
                    wanted = [self._position + k * self.global_batch for k in range(self.prefetch)]
                    wanted = [p for p in wanted if limit is None or p + self.global_batch <= limit]
                    for stale in set(ahead) - set(wanted):
                        ahead.pop(stale).cancel()
                    for p in wanted:
                        if p not in ahead:
                            ahead[p] = pool.submit(self._batch_at, p)
                yield batch
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def state_dict(self) -> dict[str, Any]:
        """The loader's position and what it depends on (the same on every rank)."""
        return {
            "position": self._position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "seq_len": self.seq_len,
            "split": self.split,
            "windows_per_epoch": self.windows_per_epoch,
            "data_key": self._key,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; refuses a state of other data, split, seq_len, seed or order."""
        mine = self.state_dict()
        for name in ("data_key", "split", "seq_len", "seed", "shuffle", "windows_per_epoch"):
            if name in state and state[name] != mine[name]:
                raise DataError(
                    f"the loader state was saved with {name}={state[name]!r} but this loader has {mine[name]!r}; "
                    "resume with the same data and options"
                )
        position = state.get("position")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise DataError(f"the loader state has no valid position ({position!r})")
        self._position = position


def fixed_windows(data_dir: str | os.PathLike[str], split: str, seq_len: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` deterministic windows of ``split`` (``LongTensor[n, seq_len + 1]``), chosen by ``seed``
    without repetition and returned in stream order. Raises :class:`DataError` if the split holds
    fewer than ``n * (seq_len + 1)`` tokens, naming both numbers."""
    window, n = _positive("seq_len", seq_len) + 1, _positive("n", n)
    stream = TokenStream(data_dir, split)
    available = len(stream) // window
    if available < n:
        raise _too_small(data_dir, split, len(stream), n * window, f"{n} windows of {window} tokens")
    ids = np.sort(np.random.default_rng(seed).choice(available, n, replace=False))
    rows = [stream.read(int(i) * window, window) for i in ids]
    return torch.from_numpy(np.stack(rows).astype(np.int64))
