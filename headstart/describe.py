"""What a teacher is and which sub-networks it admits (``headstart inspect``)."""

from __future__ import annotations

from typing import Any

from headstart.config.evaluate import InspectConfig, InspectPaths


def describe_teacher(teacher: Any, seq_len: int = 2048) -> dict[str, Any]:
    """Facts about a teacher, as printed by ``headstart inspect``."""
    d, counts = teacher.dims, teacher.adapter.counts(seq_len=seq_len)
    tok = teacher.tokenizer
    info = {
        "source": teacher.source,
        "model_type": teacher.model.config.model_type,
        "class": type(teacher.model).__name__,
        "fingerprint": teacher.fingerprint,
        "dims": {
            "num_hidden_layers": d.num_hidden_layers, "hidden_size": d.hidden_size,
            "num_attention_heads": d.num_attention_heads, "num_key_value_heads": d.num_key_value_heads,
            "heads_per_group": d.heads_per_group, "head_dim": d.head_dim,
            "intermediate_size": d.intermediate_size, "vocab_size (embedding rows)": d.vocab_size,
        },
        "tied_embeddings": teacher.adapter.tied,
        "params": counts.params,
        "params_loaded": sum(p.numel() for p in teacher.model.parameters()),
        "embedding_params": counts.embedding_params,
        "non_embedding_params": counts.non_embedding_params,
        "forward_flops_per_token": counts.flops_per_token,
        "flops_context": seq_len,
        "tokenizer_vocab": len(tok) if tok is not None else None,
        "spec_ranges": {
            "layers": f"1..{d.num_hidden_layers} (any subset, in order)",
            "hidden": f"1..{d.hidden_size}",
            "kv_groups": f"1..{d.num_key_value_heads}",
            "heads_per_group": f"1..{d.heads_per_group}",
            "mlp": f"1..{d.intermediate_size}",
            "constraint": teacher.adapter.constraint(),
        },
    }
    if d.layer_sizes is not None:  # a layer-wise student: its layers, and no spec of it can be cut
        info["dims"]["per layer (kv x heads/mlp)"] = " ".join(
            f"{s.num_key_value_heads}x{s.heads_per_group}/{s.intermediate_size}" for s in d.layer_sizes)
        info["spec_ranges"] = {"constraint": "a layer-wise student; cut sub-networks from its teacher"}
    return info


def run(paths: InspectPaths, cfg: InspectConfig) -> dict[str, Any]:
    """Load the teacher and describe it."""
    from headstart.teacher import load_teacher

    return describe_teacher(load_teacher(paths.teacher), seq_len=cfg.seq_len)
