"""The cache-logits stage: run the teacher once over the training windows a run will draw and store its top-k
log-probabilities (:mod:`headstart.training.teacher_cache`), for KD without the teacher online."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from headstart import preflight
from headstart.config.cache import CacheConfig, CachePaths
from headstart.errors import DataError
from headstart.progress import Progress

if TYPE_CHECKING:
    import numpy as np

    from headstart.data import WindowLoader


def check(paths: CachePaths, cfg: CacheConfig) -> None:
    """The output path, the split and the window length, before the teacher loads."""
    from headstart.data import read_manifest
    from headstart.teacher import model_config

    preflight.out_path(paths.out, exist_ok=False)
    if cfg.split not in read_manifest(paths.data)["splits"]:
        raise DataError(f"split {cfg.split!r} is not a split of {paths.data}; use train, search or val")
    preflight.seq_len(model_config(paths.teacher), cfg.seq_len, "the teacher")


def run(paths: CachePaths, cfg: CacheConfig, progress: Progress | None = None) -> Path:
    """Build the cache; returns its directory."""
    from headstart import parallel, precision
    from headstart.data import WindowLoader, check_tokenizer, check_vocab, read_manifest
    from headstart.teacher import load_teacher
    from headstart.training.teacher_cache import build_cache

    check(paths, cfg)
    manifest = read_manifest(paths.data)
    teacher = load_teacher(paths.teacher)
    if teacher.tokenizer is not None:
        check_tokenizer(paths.data, teacher.tokenizer)
    vocab = int(manifest["vocab_size"])
    check_vocab(teacher.model.config.vocab_size, vocab)
    device = parallel.device()
    teacher.model.to(device)
    autocast = precision.autocast(precision.compute_dtype(cfg.dtype, device), device)
    loader = WindowLoader(paths.data, cfg.split, cfg.seq_len, cfg.batch_size, seed=cfg.seed)
    ids = drawn_windows(loader, cfg.tokens)
    batches = (loader.read_windows(ids[s:s + cfg.batch_size]) for s in range(0, len(ids), cfg.batch_size))
    meta = {"teacher": paths.teacher, "teacher_fingerprint": teacher.fingerprint, "data": str(paths.data),
            "data_fingerprint": manifest.get("key"), "split": cfg.split, "tokens": cfg.tokens, "seed": cfg.seed}
    return build_cache(teacher.model, batches, paths.out, k=cfg.k, vocab=vocab, seq_len=cfg.seq_len, meta=meta,
                       shard_windows=cfg.shard_windows, max_windows=len(ids), autocast=autocast, progress=progress)


def drawn_windows(loader: WindowLoader, tokens: int | None) -> np.ndarray:
    """Window ids to cache, sorted: every window of the split, or (``tokens``) those that a training run
    with the loader's seed draws in its first ``tokens`` tokens. The draw order depends on the seed only,
    not on the batch size or the process count, so one cache serves every such run."""
    import numpy as np

    n = loader.windows_per_epoch
    if tokens is None:
        return np.arange(n)
    return np.unique(loader.window_ids(0, -(-tokens // loader.seq_len)))
