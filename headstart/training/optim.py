"""The optimizer, its learning-rate schedule (linear warmup, then cosine or warmup-stable-decay) and autocast."""

from __future__ import annotations

import math

import torch
from torch import nn

from headstart.config.train import OptimConfig, ScheduleConfig


def lr_at(step: int, lr: float, schedule: ScheduleConfig, total_steps: int) -> float:
    """Linear warmup to ``lr``, then (``cosine``) cosine decay to ``min_lr`` at ``total_steps``, or
    (``wsd``) ``lr`` held until the last ``decay`` fraction of the steps, then linear to ``min_lr``."""
    warmup, floor = schedule.warmup_steps(total_steps), schedule.min_lr
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule.name == "wsd":
        decay_start = max(warmup, total_steps - int(round(schedule.decay * total_steps)))
        if step < decay_start:
            return lr
        progress = min(1.0, (step - decay_start + 1) / max(1, total_steps - decay_start))
        return lr + (floor - lr) * progress
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (fused where the device supports it); vectors (norms, biases) without weight decay and at
    ``optim.norm_lr`` times the schedule's LR (each group's ``lr_scale``)."""
    cfg = optim
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": cfg.norm_lr}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def autocast_for(dtype_name: str, device: torch.device) -> torch.autocast:
    """Autocast in ``dtype_name`` (``runtime.dtype``; :mod:`headstart.precision`; disabled for float32)."""
    from headstart.precision import compute_dtype

    dtype = compute_dtype(dtype_name, device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
