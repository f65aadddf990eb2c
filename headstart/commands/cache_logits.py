"""``headstart cache-logits``: run the teacher once over the training windows and store its top-k."""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from headstart.errors import ConfigError

HELP = "cache the teacher's top-k log-probabilities per token of the training windows (for headstart train)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart cache-logits``."""
    p.add_argument("--teacher", required=True, help="model directory, .gguf file, hub id, or builtin:smollm2-135m")
    p.add_argument("--data", required=True, help="prepared data directory (headstart prepare)")
    p.add_argument("--out", required=True, help="cache directory (must not exist)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per window: the same as headstart train's")
    p.add_argument("--k", type=int, default=64, help="log-probabilities kept per token (default %(default)s)")
    p.add_argument("--split", default="train", help="split to cache (default %(default)s)")
    p.add_argument("--tokens", type=int, help="stop after this many tokens (default: the whole split, one epoch)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per teacher forward")
    p.add_argument("--shard-windows", type=int, default=1024, help="windows per shard file")
    p.add_argument("--autocast", choices=("auto", "bf16", "none"), default="auto",
                   help="run the teacher in bf16 (auto: where the device supports it fast)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the cache and print its summary."""
    from headstart import parallel
    from headstart.data import WindowLoader, check_tokenizer, check_vocab, read_manifest
    from headstart.teacher import load_teacher
    from headstart.train.config import TrainConfig
    from headstart.train.teacher_cache import build_cache

    if args.k < 1 or args.seq_len < 1 or args.batch_size < 1:
        raise ConfigError("--k, --seq-len and --batch-size must be positive")
    manifest = read_manifest(args.data)
    teacher = load_teacher(args.teacher)
    if teacher.tokenizer is not None:
        check_tokenizer(args.data, teacher.tokenizer)
    vocab = int(manifest["vocab_size"])
    check_vocab(teacher.model.config.vocab_size, vocab)
    device = parallel.device()
    probe = TrainConfig(data=args.data, out=args.out, student="-", kd="none", autocast=args.autocast)
    dtype = probe.autocast_dtype(device)
    teacher.model.to(device)
    autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    loader = WindowLoader(args.data, args.split, args.seq_len, args.batch_size, shuffle=False, epochs=1)
    n = loader.windows_per_epoch
    max_windows = n if args.tokens is None else max(1, args.tokens // args.seq_len)
    # every window of the split in order, the last partial batch included (training shuffles them all)
    batches = (loader.read_windows(np.arange(s, min(n, s + args.batch_size))) for s in range(0, n, args.batch_size))
    meta = {"teacher": args.teacher, "teacher_fingerprint": teacher.fingerprint, "data": str(args.data),
            "data_fingerprint": manifest.get("key"), "split": args.split}
    out = build_cache(teacher.model, batches, args.out, k=args.k, vocab=vocab, seq_len=args.seq_len, meta=meta,
                      shard_windows=args.shard_windows, max_windows=min(max_windows, n),
                      autocast=autocast, progress=args.progress)
    info = json.loads((out / "cache.json").read_text())
    print(json.dumps({"cache": str(out), "windows": info["windows"], "k": info["k"],
                      "bytes_per_token": round(info["bytes_per_token"], 1)}))
    return 0
