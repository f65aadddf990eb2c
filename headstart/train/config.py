"""The options of ``headstart train``: one dataclass, validated on construction, errors naming the flag."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from headstart.errors import ConfigError
from headstart.train.kd_loss import KDConfig

AUTOCAST = ("auto", "bf16", "fp16", "none")

# Options that may change between a run and its resume (they do not change what is trained).
RUN_ONLY = {"out", "resume", "eval_every", "eval_windows", "save_every", "keep", "tensorboard", "wandb",
            "progress", "compile", "activation_checkpointing", "target_loss"}


@dataclass
class TrainConfig:
    """Everything a training run is; every field is a ``headstart train`` flag of the same name."""

    data: str
    out: str
    student: str
    teacher: str | None = None
    tokens: int = 1_000_000
    seq_len: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: float = 0.05  # fraction of the steps when < 1, else a number of steps
    weight_decay: float = 0.1
    clip: float = 1.0
    kd: str = "forward"
    alpha: float = 0.5
    temperature: float = 1.0
    jsd_beta: float = 0.5
    teacher_cache: str | None = None
    eval_every: int = 100
    eval_windows: int = 32
    target_loss: float | None = None  # stop early once the validation loss reaches it
    save_every: int = 500
    keep: int = 2
    resume: bool = False
    seed: int = 0
    autocast: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    fsdp: bool = False
    tensorboard: bool = False
    wandb: str | None = None
    loss_chunk: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {"tokens": self.tokens, "seq_len": self.seq_len, "batch_size": self.batch_size,
                    "grad_accum": self.grad_accum, "lr": self.lr}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} {value} must be positive")
        for name in ("min_lr", "warmup", "weight_decay", "clip", "eval_every", "eval_windows", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} must not be negative")
        if self.min_lr > self.lr:
            raise ConfigError(f"--min-lr {self.min_lr} is above --lr {self.lr}; the floor must not exceed the peak")
        if self.keep < 1:
            raise ConfigError(f"--keep {self.keep} must be at least 1")
        if self.autocast not in AUTOCAST:
            raise ConfigError(f"--autocast {self.autocast!r} is unknown; use one of {', '.join(AUTOCAST)}")
        if self.target_loss is not None and not self.eval_windows:
            raise ConfigError("--target-loss needs validation: set --eval-windows above 0")
        if self.loss_chunk is not None and self.loss_chunk < 1:
            raise ConfigError(f"--loss-chunk {self.loss_chunk} must be positive")
        kd = self.kd_config()
        if kd.uses_teacher and not (self.teacher or self.teacher_cache):
            raise ConfigError(f"--kd {self.kd} needs --teacher or --teacher-cache; use --kd none for CE only")

    def kd_config(self) -> KDConfig:
        """The loss settings (validated)."""
        return KDConfig(self.kd, alpha=self.alpha, temperature=self.temperature, beta=self.jsd_beta)

    def warmup_steps(self, total_steps: int) -> int:
        """Warmup in optimizer steps (at least 1)."""
        steps = self.warmup * total_steps if self.warmup < 1 else self.warmup
        return max(1, int(round(steps)))

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on ``device`` (``None``: full precision)."""
        if self.autocast == "none":
            return None
        if self.autocast == "fp16":
            return torch.float16
        if self.autocast == "bf16":
            return torch.bfloat16
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        fast_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return torch.bfloat16 if fast_bf16 else None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for ``config.yaml`` and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a mapping of field names (unknown names refused)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown train option(s) {unknown}")
        return cls(**data)
