"""The options of ``headstart train``: one dataclass, validated on construction, errors naming the flag.

No torch here: the CLI's ``--help`` and recipe validation import this module without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from headstart.config import option
from headstart.configs import DTYPE_HELP, DTYPES, KINDS, TEACHER_HELP, not_negative, positive
from headstart.errors import ConfigError

SCHEDULES = ("cosine", "wsd")

# Options that may change between a run and its resume (they do not change what is trained).
RUN_ONLY = {"out", "resume", "eval_every", "eval_windows", "eval_seed", "save_every", "keep", "tensorboard", "wandb",
            "progress", "compile", "activation_checkpointing", "target_loss", "async_save", "shard_teacher"}


@dataclass
class TrainConfig:
    """``headstart train``: pretrain a student with cross-entropy and distillation from the teacher."""

    student: str | None = option(None, "exported student directory, a spec file of the teacher (extracted on the "
                                 "fly), or random:<spec file or directory> (same architecture, fresh init)",
                                 required=True)
    teacher: str | None = option(None, TEACHER_HELP)
    data: str | None = option(None, "prepared data directory (headstart prepare)", required=True)
    out: str | None = option(None, "run directory: metrics, checkpoints, config.yaml, student/", required=True)
    teacher_cache: str | None = option(None, "cached top-k teacher log-probs (headstart cache-logits) instead of "
                                       "running the teacher")
    tokens: int = option(1_000_000, "training budget in tokens")
    seq_len: int = option(256, "tokens per window")
    batch_size: int = option(8, "windows per micro-batch per process")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-3, "peak learning rate")
    min_lr: float = option(1e-4, "cosine floor")
    warmup: float = option(0.05, "warmup: a fraction of the steps when < 1, else steps")
    schedule: str = option("cosine", "LR after warmup: cosine decay to --min-lr, or wsd (warmup-stable-decay: "
                           "constant, then linear to --min-lr over the last --decay of the steps)", choices=SCHEDULES)
    decay: float = option(0.2, "wsd: fraction of the steps in the final decay")
    weight_decay: float = option(0.1, "AdamW weight decay")
    norm_lr: float = option(1.0, "LR of the vectors (norm gains, biases) as a fraction of the schedule's; a "
                            "student cut from a teacher inherits small norm gains that Adam moves by about the LR "
                            "per step")
    clip: float = option(1.0, "gradient norm clip (0: off)")
    seed: int = option(0, "seed of init, data order and everything random")
    kd: str = option("forward", "divergence D of alpha*CE + (1-alpha)*T^2*D(teacher||student); none: CE only",
                     choices=KINDS)
    alpha: float = option(0.5, "weight of CE")
    temperature: float = option(1.0, "softmax temperature T")
    jsd_beta: float = option(0.5, "teacher weight of the JSD mixture")
    kd_until: float = option(1.0, "distil only for this fraction of the steps, then CE only (the teacher is no "
                             "longer run)")
    hidden_weight: float = option(0.0, "weight of the hidden-state term: the teacher's residual stream at the "
                                  "student's layers, sliced to its channels (a student cut from --teacher)")
    hidden_layers: str = option("all", "student layers the hidden-state term matches: all, last, or i,j,...")
    loss_chunk: int | None = option(None, "tokens per chunk of the memory-safe loss (default: auto)")
    eval_every: int = option(100, "steps between validations (0: only at the end)")
    eval_windows: int = option(32, "fixed validation windows (0: none)")
    eval_seed: int | None = option(None, "seed of the validation windows' choice (default: --seed)")
    target_loss: float | None = option(None, "stop once the validation loss reaches this (schedule unchanged)")
    save_every: int = option(500, "steps between checkpoints")
    keep: int = option(2, "checkpoints kept (newest)")
    resume: bool = option(False, "continue from the newest checkpoint in --out")
    tensorboard: bool = option(False, "also log to TensorBoard (needs tensorboard)")
    wandb: str | None = option(None, "also log to this Weights & Biases project (needs wandb)", metavar="PROJECT")
    progress: bool = option(True, "progress bar")
    dtype: str = option("auto", DTYPE_HELP, choices=DTYPES)
    compile: bool = option(False, "torch.compile each block (slow start)")
    activation_checkpointing: bool = option(False, "recompute activations in backward")
    fsdp: bool = option(False, "under torchrun: FSDP2 (fully_shard) instead of DDP; checkpoints are sharded (DCP) "
                        "and resume on any process count with the same global batch")
    shard_teacher: bool = option(True, "with --fsdp: shard the teacher's blocks too (forward only); "
                                 "--no-shard-teacher keeps a full replica per process")
    async_save: bool = option(False, "with --fsdp: write checkpoints in a background thread while training goes on")

    def __post_init__(self) -> None:
        positive(tokens=self.tokens, seq_len=self.seq_len, batch_size=self.batch_size, grad_accum=self.grad_accum,
                 lr=self.lr, temperature=self.temperature, loss_chunk=self.loss_chunk)
        not_negative(min_lr=self.min_lr, warmup=self.warmup, weight_decay=self.weight_decay, clip=self.clip,
                     norm_lr=self.norm_lr,
                     eval_every=self.eval_every, eval_windows=self.eval_windows, save_every=self.save_every)
        if self.min_lr > self.lr:
            raise ConfigError(f"--min-lr {self.min_lr} is above --lr {self.lr}; the floor must not exceed the peak")
        if self.keep < 1:
            raise ConfigError(f"--keep {self.keep} must be at least 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha {self.alpha} must lie in [0, 1]")
        if not 0.0 <= self.decay <= 1.0 or not 0.0 <= self.kd_until <= 1.0:
            raise ConfigError(f"--decay {self.decay} and --kd-until {self.kd_until} must lie in [0, 1]")
        not_negative(hidden_weight=self.hidden_weight)
        if self.hidden_layers not in ("all", "last"):
            from headstart.train.hidden_loss import parse_layers

            parse_layers(self.hidden_layers)
        if self.kd == "jsd" and not 0.0 < self.jsd_beta < 1.0:
            raise ConfigError(f"--jsd-beta {self.jsd_beta} must lie strictly between 0 and 1")
        if self.dtype == "float16":
            raise ConfigError("--dtype float16 would train without loss scaling and underflow gradients; "
                              "use --dtype bfloat16 (or float32)")
        if self.target_loss is not None and not self.eval_windows:
            raise ConfigError("--target-loss needs validation: set --eval-windows above 0")
        if self.uses_teacher and self.student is not None and not (self.teacher or self.teacher_cache):
            raise ConfigError(f"--kd {self.kd} needs --teacher or --teacher-cache; use --kd none for CE only")
        if self.hidden_weight > 0 and (self.teacher_cache or (self.student is not None and not self.teacher)):
            raise ConfigError("--hidden-weight needs the teacher online: pass --teacher (not --teacher-cache)")

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss needs the teacher (its distribution, or its hidden states)."""
        return (self.kd != "none" and self.alpha < 1.0) or self.hidden_weight > 0

    def distill_steps(self, total_steps: int) -> int:
        """Steps that distil (``--kd-until`` of the budget); the rest train on CE only."""
        return total_steps if self.kd_until >= 1.0 else int(round(self.kd_until * total_steps))

    def kd_config(self) -> Any:
        """The loss settings as a :class:`~headstart.train.kd_loss.KDConfig`."""
        from headstart.train.kd_loss import KDConfig

        return KDConfig(self.kd, alpha=self.alpha, temperature=self.temperature, beta=self.jsd_beta)

    def warmup_steps(self, total_steps: int) -> int:
        """Warmup in optimizer steps (at least 1)."""
        steps = self.warmup * total_steps if self.warmup < 1 else self.warmup
        return max(1, int(round(steps)))

    def val_seed(self) -> int:
        """The seed that chooses the validation windows."""
        return self.seed if self.eval_seed is None else self.eval_seed

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for ``config.yaml`` and checkpoints."""
        return asdict(self)
