"""``headstart eval``: perplexity, generations, size and (optionally) lm-eval tasks of a checkpoint."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from headstart import evaluate as ev
from headstart.errors import ConfigError

HELP = "evaluate a checkpoint: perplexity on a prepared split or a text, sampled generations, size, lm-eval tasks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart eval``."""
    p.add_argument("checkpoint", help="exported checkpoint directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="directory made by `headstart prepare` (its tokenizer must match)")
    src.add_argument("--text", help="a UTF-8 text file to measure perplexity on")
    p.add_argument("--split", default="val", help="split of --data (default: val)")
    p.add_argument("--windows", type=int, default=64, help="number of evaluation windows")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per window")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--prompts", default="|".join(ev.DEFAULT_PROMPTS), help="'|'-separated prompts to sample from")
    p.add_argument("--max-new-tokens", type=int, default=40, help="tokens to sample per prompt (0: no samples)")
    p.add_argument("--seed", type=int, default=0, help="seed for window choice and sampling")
    p.add_argument("--tasks", help="comma-separated lm-evaluation-harness tasks (needs headstart[lm-eval])")
    p.add_argument("--limit", type=int, help="lm-eval: examples per task")
    p.add_argument("--json", dest="json_out", help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print a short report."""
    if args.windows < 1 or args.seq_len < 1:
        raise ConfigError("--windows and --seq-len must be positive")
    model, tokenizer = ev.load_checkpoint_dir(args.checkpoint)
    result: dict = {"checkpoint": str(args.checkpoint), **ev.size_of(model, args.seq_len)}
    windows = None
    if args.data:
        from headstart.data import check_tokenizer, check_vocab, fixed_windows, read_manifest

        check_tokenizer(args.data, tokenizer)
        check_vocab(model.config.vocab_size, read_manifest(args.data)["vocab_size"])
        windows = fixed_windows(args.data, args.split, args.seq_len, args.windows, seed=args.seed)
    elif args.text:
        windows = ev.text_windows(tokenizer, Path(args.text).read_text(errors="replace"), args.seq_len, args.windows)
    if windows is not None:
        result.update(ev.perplexity(model, windows, args.batch_size))
    if args.max_new_tokens > 0:
        prompts = [p for p in args.prompts.split("|") if p]
        result["samples"] = ev.sample(model, tokenizer, prompts, args.max_new_tokens, seed=args.seed)
    if args.tasks:
        result["tasks"] = ev.lm_eval_tasks(args.checkpoint, args.tasks.split(","), args.batch_size, args.limit)
    _print(result)
    if args.json_out:
        tmp = f"{args.json_out}.tmp"
        Path(tmp).write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.json_out)
    return 0


def _print(r: dict) -> None:
    print(f"{r['checkpoint']}: {r['params']:,} parameters, {r['flops_per_token']:,} forward FLOPs/token")
    if "loss" in r:
        print(f"  loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}  ({r['tokens']:,} tokens)")
    for task, metrics in r.get("tasks", {}).items():
        print(f"  {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    for s in r.get("samples", []):
        print("  > " + s.replace("\n", " ")[:200])
