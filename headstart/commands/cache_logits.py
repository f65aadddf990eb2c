"""``headstart cache-logits``: run the teacher once over the training windows and store its top-k."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from headstart.commands.progress import Bars
from headstart.configs import CacheLogitsConfig
from headstart.errors import DataError

if TYPE_CHECKING:
    import numpy as np

    from headstart.data import WindowLoader


def run(cfg: CacheLogitsConfig) -> Path:
    """Build the cache; returns its directory."""
    from headstart import parallel, precision, preflight
    from headstart.data import WindowLoader, check_tokenizer, check_vocab, read_manifest
    from headstart.teacher import load_teacher, model_config
    from headstart.train.teacher_cache import build_cache

    preflight.out_path(cfg.out, exist_ok=False)
    manifest = read_manifest(cfg.data)
    if cfg.split not in manifest["splits"]:
        raise DataError(f"--split {cfg.split!r} is not a split of {cfg.data}; use train, search or val")
    preflight.seq_len(model_config(cfg.teacher), cfg.seq_len, "the teacher")
    teacher = load_teacher(cfg.teacher)
    if teacher.tokenizer is not None:
        check_tokenizer(cfg.data, teacher.tokenizer)
    vocab = int(manifest["vocab_size"])
    check_vocab(teacher.model.config.vocab_size, vocab)
    device = parallel.device()
    teacher.model.to(device)
    autocast = precision.autocast(precision.compute_dtype(cfg.dtype, device), device)
    loader = WindowLoader(cfg.data, cfg.split, cfg.seq_len, cfg.batch_size, seed=cfg.seed)
    ids = drawn_windows(loader, cfg.tokens)
    batches = (loader.read_windows(ids[s:s + cfg.batch_size]) for s in range(0, len(ids), cfg.batch_size))
    meta = {"teacher": cfg.teacher, "teacher_fingerprint": teacher.fingerprint, "data": str(cfg.data),
            "data_fingerprint": manifest.get("key"), "split": cfg.split, "tokens": cfg.tokens, "seed": cfg.seed}
    with Bars(cfg.progress) as progress:
        return build_cache(teacher.model, batches, cfg.out, k=cfg.k, vocab=vocab, seq_len=cfg.seq_len, meta=meta,
                           shard_windows=cfg.shard_windows, max_windows=len(ids), autocast=autocast,
                           progress=progress)


def drawn_windows(loader: WindowLoader, tokens: int | None) -> np.ndarray:
    """Window ids to cache, sorted: every window of the split, or (``tokens``) those that a training run
    with the loader's seed draws in its first ``tokens`` tokens. The draw order depends on the seed only,
    not on the batch size or the process count, so one cache serves every such run."""
    import numpy as np

    n = loader.windows_per_epoch
    if tokens is None:
        return np.arange(n)
    return np.unique(loader.window_ids(0, -(-tokens // loader.seq_len)))


def summary(out: Path, cfg: CacheLogitsConfig) -> str:
    """One JSON line: where the cache is, its windows, k and bytes per token."""
    info = json.loads((out / "cache.json").read_text())
    return json.dumps({"cache": str(out), "windows": info["windows"], "k": info["k"],
                       "bytes_per_token": round(info["bytes_per_token"], 1)})
