"""``headstart train``: the budget and batch, then one section per concern (optimizer, schedule, KD, ...).

No torch here: ``--help`` and recipe validation import this module without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headstart.config.common import DTYPE_HELP, DTYPES, TEACHER_HELP, check_local
from headstart.config.fields import MAX_TOKENS, SEED, FieldError, Section, option

KINDS = ("forward", "reverse", "jsd", "none")
SCHEDULES = ("cosine", "wsd")
IGNORE_INDEX = -100  # label of positions that carry no loss
#: The schedule of training that starts from the teacher's weights (the search's rungs, and a recipe's runs of
#: cut students): a 1 % warmup to half of random init's peak LR (see docs/benchmarks/token_efficiency.md).
INHERITED_LR, INHERITED_WARMUP = 5e-4, 0.01
INHERITED: dict[str, Any] = {"optim": {"lr": INHERITED_LR}, "schedule": {"warmup": INHERITED_WARMUP}}


@dataclass
class TrainPaths(Section):
    """Where ``headstart train`` reads and writes."""

    student: str = option(help="exported student directory, a spec file of the teacher (extracted on the fly), "
                          "or random:<spec file or directory> (same architecture, fresh init)")
    data: str = option(help="prepared data directory (headstart prepare)")
    out: str = option(help="run directory: metrics, checkpoints, config.yaml, student/")
    teacher: str | None = option(None, TEACHER_HELP)
    teacher_cache: str | None = option(None, "cached top-k teacher log-probs (headstart cache-logits) instead of "
                                       "running the teacher")
    resume: bool = option(False, "continue from the newest checkpoint in --out")

    def check(self) -> None:
        check_local("student", self.student)
        check_local("data", self.data, "dir")
        check_local("teacher", self.teacher)
        check_local("teacher_cache", self.teacher_cache, "dir")


@dataclass
class OptimConfig(Section):
    """AdamW and the gradient."""

    lr: float = option(1e-3, "peak learning rate", gt=0, le=10)
    weight_decay: float = option(0.1, "AdamW weight decay", ge=0)
    norm_lr: float = option(1.0, "LR of the vectors (norm gains, biases) as a fraction of the schedule's; a student "
                            "cut from a teacher inherits small norm gains that Adam moves by about the LR per step",
                            ge=0)
    clip: float = option(1.0, "gradient norm clip (0: off)", ge=0)
    grad_accum: int = option(1, "micro-batches per optimizer step", ge=1, le=4096)


@dataclass
class ScheduleConfig(Section):
    """The learning rate over the steps."""

    name: str = option("cosine", "after warmup: cosine decay to min_lr, or wsd (warmup-stable-decay: constant, "
                       "then linear to min_lr over the last `decay` of the steps)", choices=SCHEDULES)
    warmup: float = option(0.05, "warmup: a fraction of the steps when < 1, else steps", ge=0)
    min_lr: float = option(1e-4, "the floor of the decay", ge=0)
    decay: float = option(0.2, "wsd: fraction of the steps in the final decay", ge=0, le=1)

    def warmup_steps(self, total_steps: int) -> int:
        """Warmup in optimizer steps (at least 1)."""
        steps = self.warmup * total_steps if self.warmup < 1 else self.warmup
        return max(1, int(round(steps)))


@dataclass
class KDConfig(Section):
    """The loss: ``alpha * CE + (1 - alpha) * T^2 * D(teacher || student)``."""

    kind: str = option("forward", "divergence D; none: CE only", choices=KINDS)
    alpha: float = option(0.5, "weight of CE", ge=0, le=1)
    temperature: float = option(1.0, "softmax temperature T", gt=0, le=100)
    beta: float = option(0.5, "jsd: teacher weight of the mixture", gt=0, lt=1)
    until: float = option(1.0, "distil only for this fraction of the steps, then CE only (the teacher is no "
                          "longer run)", ge=0, le=1)
    chunk: int | None = option(None, "tokens per chunk of the memory-safe loss (default: auto)", ge=1)

    @property
    def ignore_index(self) -> int:
        """Label of positions without a loss."""
        return IGNORE_INDEX

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss needs a teacher at all."""
        return self.kind != "none" and self.alpha < 1.0

    @property
    def ce_weight(self) -> float:
        """Weight of the cross-entropy term."""
        return 1.0 if self.kind == "none" else self.alpha

    @property
    def kd_weight(self) -> float:
        """Weight of the divergence term, T^2 included."""
        return 0.0 if self.kind == "none" else (1.0 - self.alpha) * self.temperature**2


@dataclass
class HiddenConfig(Section):
    """Matching the teacher's residual stream at the student's layers (a student cut from the teacher)."""

    weight: float = option(0.0, "weight of the hidden-state term (0: off)", ge=0)
    layers: str = option("all", "student layers the term matches: all, last, or i,j,...")

    def check(self) -> None:
        if self.layers not in ("all", "last"):
            parse_layers(self.layers)


@dataclass
class ValidationConfig(Section):
    """Fixed validation windows, scored on intervals."""

    every: int = option(100, "steps between validations (0: only at the end)", ge=0)
    windows: int = option(32, "fixed validation windows (0: none)", ge=0)
    seed: int | None = option(None, "seed of the windows' choice (default: the run's seed)", **SEED)
    target_loss: float | None = option(None, "stop once the validation loss reaches this (schedule unchanged)",
                                       gt=0)


@dataclass
class CheckpointConfig(Section):
    """Checkpoints for resuming."""

    every: int = option(500, "steps between checkpoints (0: only at the end)", ge=0)
    keep: int = option(2, "checkpoints kept (newest) while the run trains", ge=1)
    retain: str = option("all", "what stays once the run has exported its student: all (the newest keep), last "
                         "(the newest), none (the student alone; `headstart export` needs a checkpoint)",
                         choices=("all", "last", "none"))
    async_save: bool = option(False, "with runtime.fsdp: write checkpoints in a background thread")


@dataclass
class LoggingConfig(Section):
    """Where metrics go besides metrics.jsonl."""

    tensorboard: bool = option(False, "also log to TensorBoard (needs tensorboard)")
    wandb: str | None = option(None, "also log to this Weights & Biases project (needs wandb)", metavar="PROJECT")
    wandb_name: str | None = option(None, "the W&B run's name (default: the run directory's last two parts)")
    wandb_group: str | None = option(None, "the W&B group (a recipe's runs: its out directory's name)")


@dataclass
class RuntimeConfig(Section):
    """Precision, compilation and the process layout."""

    dtype: str = option("auto", DTYPE_HELP, choices=DTYPES)
    compile: bool = option(False, "torch.compile each block (slow start)")
    activation_checkpointing: bool = option(False, "recompute activations in backward")
    fsdp: bool = option(False, "under torchrun: FSDP2 (fully_shard) instead of DDP; checkpoints are sharded and "
                        "resume on any process count with the same global batch")
    shard_teacher: bool = option(True, "with fsdp: shard the teacher's blocks too (forward only); off: a full "
                                 "teacher replica per process")


@dataclass
class TrainConfig(Section):
    """``headstart train``: pretrain a student with cross-entropy and distillation from the teacher."""

    tokens: int = option(1_000_000, "training budget in tokens", ge=1, le=MAX_TOKENS)
    seq_len: int = option(256, "tokens per window", ge=2, le=1 << 20)
    batch_size: int = option(8, "windows per micro-batch per process", ge=1, le=1 << 16)
    seed: int = option(0, "seed of init, data order and everything random", **SEED)
    optim: OptimConfig = option(OptimConfig, "the optimizer")
    schedule: ScheduleConfig = option(ScheduleConfig, "the learning-rate schedule")
    kd: KDConfig = option(KDConfig, "the distillation loss")
    hidden: HiddenConfig = option(HiddenConfig, "the hidden-state term")
    validation: ValidationConfig = option(ValidationConfig, "validation during training")
    checkpoint: CheckpointConfig = option(CheckpointConfig, "checkpoints")
    logging: LoggingConfig = option(LoggingConfig, "metrics backends")
    runtime: RuntimeConfig = option(RuntimeConfig, "precision and processes")

    def check(self) -> None:
        if self.schedule.min_lr > self.optim.lr:
            raise FieldError("schedule.min_lr", f"{self.schedule.min_lr:g} is above optim.lr {self.optim.lr:g}; the "
                             "floor must not exceed the peak")
        if self.runtime.dtype == "float16":
            raise FieldError("runtime.dtype", "float16 would train without loss scaling and underflow gradients; "
                             "use bfloat16 (or float32)")
        step = self.batch_size * self.seq_len * self.optim.grad_accum
        if self.tokens < step:
            raise FieldError("tokens", f"{self.tokens:,} is less than one optimizer step ({self.batch_size} x "
                             f"{self.seq_len} x {self.optim.grad_accum} = {step:,} tokens); raise tokens or lower "
                             "batch_size, seq_len or optim.grad_accum")
        if self.validation.target_loss is not None and not self.validation.windows:
            raise FieldError("validation.target_loss", "needs validation: set validation.windows above 0")

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss needs the teacher (its distribution, or its hidden states)."""
        return self.kd.uses_teacher or self.hidden.weight > 0

    def distill_steps(self, total_steps: int) -> int:
        """Steps that distil (``kd.until`` of the budget); the rest train on CE only."""
        return total_steps if self.kd.until >= 1.0 else int(round(self.kd.until * total_steps))

    def val_seed(self) -> int:
        """The seed that chooses the validation windows."""
        return self.seed if self.validation.seed is None else self.validation.seed


#: Options that may change between a run and its resume: they do not change what is trained.
RUN_ONLY = frozenset({"validation.every", "validation.windows", "validation.seed", "validation.target_loss",
                      "checkpoint.every", "checkpoint.keep", "checkpoint.retain", "checkpoint.async_save",
                      "logging.tensorboard", "logging.wandb", "logging.wandb_name", "logging.wandb_group",
                      "runtime.compile", "runtime.activation_checkpointing", "runtime.shard_teacher"})


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested option values as dotted keys (``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def parse_layers(choice: str) -> list[int]:
    """``"0,3,5"`` -> ``[0, 3, 5]``; :class:`FieldError` otherwise."""
    try:
        layers = sorted({int(x) for x in choice.split(",") if x.strip()})
    except ValueError:
        layers = []
    if not layers or layers[0] < 0:
        raise FieldError("layers", f"{choice!r} must be all, last, or comma-separated layer indices")
    return layers
