"""The optimizer, its learning-rate schedule (linear warmup, then cosine or warmup-stable-decay) and autocast."""

from __future__ import annotations

import math

import torch
from torch import nn

from headstart.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warmup to ``lr``, then (``cosine``) cosine decay to ``min_lr`` at ``total_steps``, or
    (``wsd``) ``lr`` held until the last ``decay`` fraction of the steps, then linear to ``min_lr``."""
    warmup = cfg.warmup_steps(total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "wsd":
        decay_start = max(warmup, total_steps - int(round(cfg.decay * total_steps)))
        if step < decay_start:
            return cfg.lr
        progress = min(1.0, (step - decay_start + 1) / max(1, total_steps - decay_start))
        return cfg.lr + (cfg.min_lr - cfg.lr) * progress
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (fused where the device supports it); vectors (norms, biases) without weight decay and at
    ``--norm-lr`` times the schedule's LR (each group's ``lr_scale``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": cfg.norm_lr}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def autocast_for(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """Autocast in ``--dtype`` (:mod:`headstart.precision`; disabled for float32)."""
    from headstart.precision import compute_dtype

    dtype = compute_dtype(cfg.dtype, device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
