"""Importance from one calibration pass over the teacher.

Scores (higher = more important), all from activations on N calibration sequences:

* hidden channels: mean |output| of every norm that writes the residual space, summed over norms;
* query heads: mean L2 norm of each head's attention output (the input of the output projection),
  so heads can be ranked *within* their key/value group;
* key/value groups: the sum of their query heads' scores;
* MLP neurons: mean |activation| at the input of the down projection;
* layers: block influence, ``1 - cos(layer input, layer output)`` averaged over tokens.

Results are cached on disk under the teacher's and the data's fingerprints and reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from headstart.assets import cache_dir
from headstart.errors import DataError
from headstart.io import write_bytes
from headstart.progress import Progress, report
from headstart.teacher import Teacher

log = logging.getLogger(__name__)


@dataclass
class Importance:
    """Per-component importance scores of one teacher (float64, CPU)."""

    hidden: torch.Tensor  # [hidden_size]
    heads: torch.Tensor  # [num_hidden_layers, num_attention_heads]; head h belongs to group h // heads_per_group
    kv_groups: torch.Tensor  # [num_hidden_layers, num_key_value_heads]
    mlp: torch.Tensor  # [num_hidden_layers, intermediate_size]
    layers: torch.Tensor  # [num_hidden_layers] block influence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as safetensors, atomically."""
        return write_bytes(path, save({f.name: getattr(self, f.name).contiguous() for f in fields(self)}))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Importance:
        """Read scores written by :meth:`save`."""
        tensors = load_file(str(path))
        return cls(**{f.name: tensors[f.name] for f in fields(cls)})


def data_fingerprint(tokens: torch.Tensor) -> str:
    """Content hash of a calibration token batch."""
    t = tokens.to(torch.int64).contiguous()
    return hashlib.sha256(str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()[:16]


@torch.no_grad()
def compute_importance(
    teacher: Teacher, tokens: torch.Tensor, batch_size: int = 4, progress: Progress | None = None
) -> Importance:
    """Run the teacher over ``tokens`` ([N, seq_len] token ids) once and score every component."""
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise DataError(
            f"calibration tokens must be [N, seq_len] with N >= 1 and seq_len >= 2, got {tuple(tokens.shape)}"
        )
    model, adapter, dims = teacher.model, teacher.adapter, teacher.dims
    n_layers = dims.num_hidden_layers
    acc = {
        "hidden": torch.zeros(dims.hidden_size, dtype=torch.float64),
        "heads": torch.zeros(n_layers, dims.num_attention_heads, dtype=torch.float64),
        "mlp": torch.zeros(n_layers, dims.intermediate_size, dtype=torch.float64),
        "layers": torch.zeros(n_layers, dtype=torch.float64),
    }
    hooks = []

    def on_norm(_m, _inp, out):
        acc["hidden"] += out.detach().abs().double().sum(dim=(0, 1)).cpu()

    def on_attn(i):
        def hook(_m, args):
            x = args[0].detach().double()  # [B, S, heads * head_dim]
            per_head = x.view(*x.shape[:2], dims.num_attention_heads, dims.head_dim).norm(dim=-1)
            acc["heads"][i] += per_head.sum(dim=(0, 1)).cpu()
        return hook

    def on_mlp(i):
        def hook(_m, args):
            acc["mlp"][i] += args[0].detach().abs().double().sum(dim=(0, 1)).cpu()
        return hook

    def on_layer(i):
        def hook(_m, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            cos = torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1)  # [B, S]
            acc["layers"][i] += (1.0 - cos).sum().cpu()
        return hook

    for norm in adapter.hidden_norms(model):
        hooks.append(norm.register_forward_hook(on_norm))
    for i, layer in enumerate(adapter.decoder_layers(model)):
        hooks.append(adapter.attn_output_proj(layer).register_forward_pre_hook(on_attn(i)))
        hooks.append(adapter.mlp_output_proj(layer).register_forward_pre_hook(on_mlp(i)))
        hooks.append(layer.register_forward_hook(on_layer(i), with_kwargs=True))
    device = next(model.parameters()).device
    try:
        for start in range(0, tokens.shape[0], batch_size):
            model(input_ids=tokens[start:start + batch_size].to(device), use_cache=False)
            report(progress, "calibration", min(start + batch_size, tokens.shape[0]), tokens.shape[0])
    finally:
        for h in hooks:
            h.remove()
    n_tok = tokens.numel()
    heads = acc["heads"] / n_tok
    return Importance(
        hidden=acc["hidden"] / n_tok,
        heads=heads,
        kv_groups=heads.view(n_layers, dims.num_key_value_heads, dims.heads_per_group).sum(-1),
        mlp=acc["mlp"] / n_tok,
        layers=acc["layers"] / n_tok,
    )


def importance_cache_path(teacher: Teacher, tokens: torch.Tensor) -> Path:
    """Where the scores of ``teacher`` on ``tokens`` are cached."""
    return cache_dir() / "importance" / f"{teacher.fingerprint}-{data_fingerprint(tokens)}.safetensors"


def load_or_compute_importance(
    teacher: Teacher, tokens: torch.Tensor, batch_size: int = 4, progress: Progress | None = None,
    cache: bool = True,
) -> Importance:
    """Cached :func:`compute_importance`: reuse the scores of the same teacher on the same tokens."""
    path = importance_cache_path(teacher, tokens)
    if cache and path.exists():
        log.info("reusing cached importance %s", path)
        return Importance.load(path)
    scores = compute_importance(teacher, tokens, batch_size=batch_size, progress=progress)
    if cache:
        scores.save(path)
    return scores
