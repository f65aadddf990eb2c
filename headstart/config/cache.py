"""``headstart cache-logits``: which windows of which split, and how much of the teacher to keep."""

from __future__ import annotations

from dataclasses import dataclass

from headstart.config.common import DTYPE_HELP, DTYPES, TEACHER_HELP, check_local
from headstart.config.fields import MAX_TOKENS, SEED, Section, option


@dataclass
class CachePaths(Section):
    """Where ``headstart cache-logits`` reads and writes."""

    teacher: str = option(help=TEACHER_HELP)
    data: str = option(help="prepared data directory (headstart prepare)")
    out: str = option(help="cache directory (must not exist)")

    def check(self) -> None:
        check_local("teacher", self.teacher)
        check_local("data", self.data, "dir")


@dataclass
class CacheConfig(Section):
    """``headstart cache-logits``: the teacher's top-k log-probabilities per training token."""

    seq_len: int = option(256, "tokens per window: the same as headstart train's", ge=2)
    k: int = option(64, "log-probabilities kept per token", ge=1, le=4096)
    split: str = option("train", "split to cache", choices=("train", "search", "val"))
    tokens: int | None = option(None, "only the windows a training run of this many tokens draws (same --seed; "
                                "any batch size or process count); default: the whole split", ge=1, le=MAX_TOKENS)
    batch_size: int = option(8, "windows per teacher forward", ge=1)
    seed: int = option(0, "the training run's seed (with --tokens): it orders the windows", **SEED)
    shard_windows: int = option(1024, "windows per shard file", ge=1)
    dtype: str = option("auto", DTYPE_HELP, choices=DTYPES)
