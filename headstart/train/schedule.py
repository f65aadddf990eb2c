"""Learning-rate schedules: linear warmup, then cosine decay or warmup-stable-decay (WSD)."""

from __future__ import annotations

import math

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
