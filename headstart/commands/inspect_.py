"""``headstart inspect``: what a teacher is and which specs it admits."""

from __future__ import annotations

import argparse
import json

from headstart.teacher import DTYPES, load_teacher

HELP = "show a teacher's architecture, parameter counts and the ranges a sub-network spec can take"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart inspect``."""
    p.add_argument("--teacher", required=True, help="model directory, .gguf file, hub id, or builtin:smollm2-135m")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="dtype to load the teacher in")
    p.add_argument("--seq-len", type=int, default=2048, help="context length for the FLOPs estimate")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def describe_teacher(teacher, seq_len: int = 2048) -> dict:
    """Facts about a teacher, as printed by ``headstart inspect``."""
    d, counts = teacher.dims, teacher.adapter.counts(seq_len=seq_len)
    real = sum(p.numel() for p in teacher.model.parameters())
    tok = teacher.tokenizer
    return {
        "source": teacher.source,
        "model_type": teacher.model.config.model_type,
        "class": type(teacher.model).__name__,
        "fingerprint": teacher.fingerprint,
        "dims": {
            "num_hidden_layers": d.num_layers, "hidden_size": d.hidden_size,
            "num_attention_heads": d.num_heads, "num_key_value_heads": d.num_kv_heads,
            "heads_per_group": d.heads_per_group, "head_dim": d.head_dim,
            "intermediate_size": d.intermediate_size, "vocab_size (embedding rows)": d.vocab_size,
        },
        "tied_embeddings": teacher.adapter.tied,
        "params": counts.params,
        "params_loaded": real,
        "embedding_params": counts.embedding_params,
        "non_embedding_params": counts.non_embedding_params,
        "forward_flops_per_token": counts.flops_per_token,
        "flops_context": seq_len,
        "tokenizer_vocab": len(tok) if tok is not None else None,
        "spec_ranges": {
            "layers": f"1..{d.num_layers} (any subset, in order)",
            "hidden": f"1..{d.hidden_size}",
            "kv_groups": f"1..{d.num_kv_heads}",
            "heads_per_group": f"1..{d.heads_per_group}",
            "mlp": f"1..{d.intermediate_size}",
            "constraint": teacher.adapter.constraint(),
        },
    }


def run(args: argparse.Namespace) -> int:
    """Load the teacher and print what it is."""
    info = describe_teacher(load_teacher(args.teacher, dtype=args.dtype), seq_len=args.seq_len)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['source']}: {info['class']} ({info['model_type']}), fingerprint {info['fingerprint']}")
    for k, v in info["dims"].items():
        print(f"  {k:<28} {v}")
    print(f"  {'tied embeddings':<28} {info['tied_embeddings']}")
    print(f"  {'tokenizer vocabulary':<28} {info['tokenizer_vocab']}")
    print(f"  {'parameters':<28} {info['params']:,} (loaded: {info['params_loaded']:,})")
    print(f"  {'  embedding':<28} {info['embedding_params']:,}")
    print(f"  {'  non-embedding':<28} {info['non_embedding_params']:,}")
    print(f"  {'forward FLOPs/token':<28} {info['forward_flops_per_token']:,} (context {args.seq_len})")
    print("spec ranges:")
    for k, v in info["spec_ranges"].items():
        print(f"  {k:<28} {v}")
    return 0
