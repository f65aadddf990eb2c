"""``headstart cache-logits``: run the teacher once over the training windows and store its top-k."""

from __future__ import annotations

import json
from pathlib import Path

from headstart.commands.progress import Bars
from headstart.configs import CacheLogitsConfig
from headstart.errors import DataError


def run(cfg: CacheLogitsConfig) -> Path:
    """Build the cache; returns its directory."""
    import numpy as np

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
    loader = WindowLoader(cfg.data, cfg.split, cfg.seq_len, cfg.batch_size, shuffle=False, epochs=1)
    n = loader.windows_per_epoch
    max_windows = n if cfg.tokens is None else max(1, cfg.tokens // cfg.seq_len)
    # every window of the split in order, the last partial batch included (training shuffles them all)
    batches = (loader.read_windows(np.arange(s, min(n, s + cfg.batch_size))) for s in range(0, n, cfg.batch_size))
    meta = {"teacher": cfg.teacher, "teacher_fingerprint": teacher.fingerprint, "data": str(cfg.data),
            "data_fingerprint": manifest.get("key"), "split": cfg.split}
    with Bars(cfg.progress) as progress:
        return build_cache(teacher.model, batches, cfg.out, k=cfg.k, vocab=vocab, seq_len=cfg.seq_len, meta=meta,
                           shard_windows=cfg.shard_windows, max_windows=min(max_windows, n), autocast=autocast,
                           progress=progress)


def summary(out: Path, cfg: CacheLogitsConfig) -> str:
    """One JSON line: where the cache is, its windows, k and bytes per token."""
    info = json.loads((out / "cache.json").read_text())
    return json.dumps({"cache": str(out), "windows": info["windows"], "k": info["k"],
                       "bytes_per_token": round(info["bytes_per_token"], 1)})
