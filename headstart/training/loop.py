"""The training loop: :func:`headstart.training.step.train_step` with eval, metrics and checkpoints around it.

:class:`Trainer` runs the step for a token budget, evaluating, logging and checkpointing on
intervals; it resumes bit for bit from its own checkpoints.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart import parallel
from headstart.config.train import RUN_ONLY, TrainConfig, flatten
from headstart.errors import CheckpointError, HeadstartError
from headstart.io import remove_stale_temps
from headstart.progress import Progress, report
from headstart.training.checkpoint import (
    CHECKPOINTS,
    latest_checkpoint,
    load_checkpoint,
    resumable,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from headstart.training.dcp import ShardedCheckpointer, rank_state_for
from headstart.training.hidden_loss import HiddenMap
from headstart.training.metrics import MetricsLogger
from headstart.training.optim import autocast_for, build_optimizer, lr_at
from headstart.training.signals import install_signals, restore_signals
from headstart.training.step import DistillModule, DivergedError, StepContext, _blocks, evaluate, train_step

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """Progress of a run, saved in every checkpoint."""

    step: int = 0
    tokens: int = 0
    teacher_tokens: int = 0
    elapsed_s: float = 0.0
    last: dict[str, float] = field(default_factory=dict)
    target_step: int | None = None  # the step whose validation reached ``--target-loss``


class Trainer:
    """Runs :func:`train_step` for ``cfg.tokens`` tokens with eval, metrics and checkpoints.

    ``student`` is a Hugging Face causal LM (trained in place); the teacher is a model (online) or
    a :class:`~headstart.training.teacher_cache.TeacherCache`; ``loader`` yields [B, L+1] windows
    and has ``state_dict``/``load_state_dict``; ``val_windows`` are fixed [n, L+1] windows;
    ``hidden`` maps the student's layers and channels to the teacher's (``--hidden-weight``).
    """

    #: Several ranks agree on a stop signal every this many steps (:meth:`_should_stop`).
    stop_poll_every = 10

    def __init__(self, cfg: TrainConfig, student: nn.Module, loader: Any, *, out: str | Path, resume: bool = False,
                 val_windows: torch.Tensor | None, vocab: int, teacher: nn.Module | None = None, cache: Any = None,
                 flops: dict[str, int] | None = None, hidden: HiddenMap | None = None,
                 progress: Progress | None = None):
        self.cfg, self.student, self.loader, self.val = cfg, student, loader, val_windows
        self.resume = resume
        self.started = False
        self.progress = progress
        self.device = parallel.device()
        self.kd = cfg.kd
        if cfg.uses_teacher and teacher is None and cache is None:
            raise HeadstartError(f"kd.kind {cfg.kd.kind} needs a teacher or a teacher cache (or kd.kind none)")
        if cfg.hidden.weight > 0 and (hidden is None or teacher is None):
            raise HeadstartError("hidden.weight needs the online teacher and the student's spec")
        self.flops = flops or {"student": 0, "teacher": 0}
        self.out = Path(out)
        self.world = parallel.world_size()
        self.tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.optim.grad_accum * self.world
        self.total_steps = max(1, math.ceil(cfg.tokens / self.tokens_per_step))
        self.distill_steps = cfg.distill_steps(self.total_steps) if cfg.uses_teacher else 0
        self.counters = Counters()
        self._stop = False
        torch.manual_seed(cfg.seed)
        hidden = hidden if cfg.hidden.weight > 0 else None
        module = DistillModule(student, self.kd, vocab, cfg.kd.chunk, cfg.hidden.weight,
                               hidden.student_layers if hidden else ())
        self.model = self._wrap(module, teacher, cache)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        # FSDP2 runs save sharded DCP checkpoints (each rank its part; they reshard on resume).
        self.checkpointer = (ShardedCheckpointer(self.out, cfg.checkpoint.keep, cfg.checkpoint.async_save)
                             if cfg.runtime.fsdp else None)
        self.autocast = autocast_for(cfg.runtime.dtype, self.device)
        online = teacher if cfg.uses_teacher and cache is None else None
        self.ctx = StepContext(self.model, self.optimizer, self.kd, cfg.optim.clip, self.autocast, teacher=online,
                               cache=cache if self.kd.uses_teacher else None, hidden=hidden,
                               hidden_weight=cfg.hidden.weight)
        self._iter = None

    def _wrap(self, module: DistillModule, teacher: nn.Module | None, cache: Any) -> nn.Module:
        """Activation checkpointing, compile, then DDP or FSDP2 (torchtitan's order)."""
        student = module.student
        runtime = self.cfg.runtime
        student.to(self.device).train()
        if runtime.activation_checkpointing:
            enable = getattr(student, "activation_checkpointing_enable", None)  # transformers >= 5.x
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        blocks = _blocks(student)
        if runtime.compile:
            for block in blocks:
                block.compile()
        # FSDP2 mixed precision: blocks gathered and computed in --dtype, gradients reduced in fp32.
        from headstart.precision import compute_dtype

        half = compute_dtype(runtime.dtype, self.device)
        if teacher is not None and self.cfg.uses_teacher and cache is None:
            teacher.to(self.device).eval().requires_grad_(False)
            if runtime.fsdp and runtime.shard_teacher:  # forward only: no gradients, no optimizer state
                parallel.shard_fsdp(teacher, _blocks(teacher), root=False, param_dtype=half)
        if runtime.fsdp:
            return parallel.shard_fsdp(module, blocks, param_dtype=half)
        return parallel.wrap_ddp(module)

    # -- state ---------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The configuration recorded in checkpoints, as dotted keys (with the world size, which only a sharded one
        may change)."""
        sharded = {"global_batch": self.cfg.batch_size * self.world} if self.checkpointer is not None else {}
        return {**flatten(self.cfg.to_dict()), "world_size": self.world, **sharded}

    def save(self) -> Path | None:
        """A checkpoint of the current step (collective: every rank calls it)."""
        trainer = {"counters": vars(self.counters), "config": self.config_dict(), "total_steps": self.total_steps}
        if self.checkpointer is not None:
            return self.checkpointer.save(self.counters.step, self.model, self.optimizer, trainer,
                                          {"loader": self.loader.state_dict(), "rng": rng_state()})
        model_state = parallel.full_model_state(self.model)
        optim_state = parallel.full_optimizer_state(self.model, self.optimizer)
        ranks = parallel.all_gather_object({"loader": self.loader.state_dict(), "rng": rng_state()})
        path, error = None, None
        if parallel.is_main():
            try:
                path = save_checkpoint(self.out, self.counters.step, model=model_state, optimizer=optim_state,
                                       ranks=ranks, trainer=trainer, keep=self.cfg.checkpoint.keep)
            except CheckpointError as exc:
                error = str(exc)
        error = parallel.broadcast_object(error)
        if error:
            raise CheckpointError(error)
        return path

    def restore(self) -> int:
        """Load the newest checkpoint of ``out`` (refusing a different configuration); its step."""
        path = resumable(self.out, resume=True)
        if self.checkpointer is not None:
            got = self.checkpointer.load(path, self.model, self.optimizer, self.config_dict(), ignore=RUN_ONLY)
            trainer, mine = got.trainer, rank_state_for(got.ranks)
        else:
            ckpt = load_checkpoint(path, self.config_dict(), ignore=RUN_ONLY)
            parallel.load_full_state(self.model, self.optimizer, ckpt.model, ckpt.optimizer)
            trainer, mine = ckpt.trainer, ckpt.ranks[parallel.rank()]
        self.loader.load_state_dict(mine["loader"])
        set_rng_state(mine["rng"])
        self.counters = Counters(**trainer["counters"])
        log.info("resumed from %s (step %d of %d)", path, self.counters.step, self.total_steps)
        return self.counters.step

    # -- the run -------------------------------------------------------------------------------
    def _next_batch(self) -> torch.Tensor:
        if self._iter is None:
            self._iter = iter(self.loader)
        try:
            return next(self._iter).to(self.device, non_blocking=True)
        except StopIteration:  # a new epoch
            self._iter = iter(self.loader)
            return next(self._iter).to(self.device, non_blocking=True)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.warning("received %s: will checkpoint after this step and stop", signal.Signals(signum).name)
        self._stop = True

    def _should_stop(self, last: bool) -> bool:
        """Whether a signal asks every rank to stop after this step. One process reads its own flag every
        step; several ranks agree through an all-reduce (a host sync) every ``stop_poll_every`` steps and
        at the run's ``last`` step, so a signal stops them all at the same step, at most that many late."""
        if self.world == 1:
            return self._stop
        if not last and self.counters.step % self.stop_poll_every:
            return False
        flag = parallel.all_reduce_sum(torch.tensor([1.0 if self._stop else 0.0], device=self.device))
        return bool(flag.item() > 0)

    def start(self) -> None:
        """Resume from the newest checkpoint (``--resume``) or refuse an ``--out`` that holds checkpoints;
        nothing is written, so a refused run leaves ``--out`` as it was."""
        if resumable(self.out, self.resume) is not None:
            self.restore()
        self.started = True

    def fit(self, on_step: Any = None) -> dict[str, Any]:
        """Train to the token budget (until SIGTERM/SIGINT, or until the validation loss reaches
        ``--target-loss``); returns the final counters and metrics.

        ``on_step(trainer)`` is called after every step (tests use it to send signals).
        """
        cfg = self.cfg
        if not self.started:
            self.start()
        if parallel.is_main():  # what killed runs left half-written (checkpoints, the export, metrics)
            for folder in (self.out, self.out / CHECKPOINTS):
                for path in remove_stale_temps(folder):
                    log.info("removed %s, left by a process that no longer runs", path)
        logging_ = cfg.logging
        metrics = MetricsLogger(self.out, enabled=parallel.is_main(), tensorboard=logging_.tensorboard,
                                wandb=logging_.wandb, config=self.config_dict(), start_step=self.counters.step,
                                name=logging_.wandb_name, group=logging_.wandb_group)
        handlers = install_signals(self._on_signal)
        try:
            self._run(metrics, on_step)
            if self.checkpointer is not None:
                self.checkpointer.wait()  # an asynchronous save is complete before the run returns
        finally:
            metrics.close()
            restore_signals(handlers)
        return {"interrupted": self._stop, **vars(self.counters)}

    def _run(self, metrics: MetricsLogger, on_step: Any) -> None:
        cfg, c = self.cfg, self.counters
        report(self.progress, "train", c.step, self.total_steps)
        while c.step < self.total_steps and c.target_step is None:
            t0 = time.perf_counter()
            lr = lr_at(c.step, cfg.optim.lr, cfg.schedule, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            batches = [self._next_batch() for _ in range(cfg.optim.grad_accum)]
            try:
                distill = c.step < self.distill_steps
                stats = train_step(self.ctx, batches, c.step + 1, distill=distill)
            except DivergedError as exc:
                last = latest_checkpoint(self.out)
                kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
                raise DivergedError(f"{exc}; training stopped, {kept}; lower --lr or raise --warmup") from None
            dt = time.perf_counter() - t0
            c.step += 1
            c.tokens += int(stats["tokens"])
            c.teacher_tokens += int(stats["tokens"]) if distill and self.ctx.teacher is not None else 0
            c.elapsed_s += dt
            c.last = {k: stats[k] for k in ("loss", "ce", "kd")}
            row = {"step": c.step, "tokens": c.tokens, "teacher_tokens": c.teacher_tokens, "loss": stats["loss"],
                   "ce": stats["ce"], "kd": stats["kd"], "hidden": stats["hidden"],
                   "lr": self.optimizer.param_groups[0]["lr"],
                   "grad_norm": stats["grad_norm"], "tokens_per_s": stats["tokens"] / max(dt, 1e-9),
                   "student_flops": 3 * self.flops["student"] * c.tokens,
                   "teacher_flops": self.flops["teacher"] * c.teacher_tokens, "elapsed_s": c.elapsed_s}
            every, target = cfg.validation.every, cfg.validation.target_loss
            if self.val is not None and ((every > 0 and c.step % every == 0) or c.step == self.total_steps):
                row.update(evaluate(self.model, self.val, cfg.batch_size, self.autocast, split=not cfg.runtime.fsdp))
                c.last.update({k: row[k] for k in ("val_loss", "val_ppl")})
                if target is not None and row["val_loss"] <= target:
                    c.target_step = c.step
            metrics.log(row)
            report(self.progress, "train", c.step, self.total_steps, _status(row))
            if on_step is not None:
                on_step(self)
            reached = c.target_step is not None
            stop = self._should_stop(last=reached or c.step == self.total_steps)
            save_every = cfg.checkpoint.every
            if stop or reached or (save_every > 0 and c.step % save_every == 0) or c.step == self.total_steps:
                self.save()
            if reached:  # the loop's condition ends the run
                log.info("validation loss %.4f reached validation.target_loss %g at step %d; stopping",
                         row["val_loss"], target, c.step)
            if stop:
                self._stop = True
                log.warning("stopped at step %d; continue with --resume", c.step)
                return


def _status(row: dict[str, Any]) -> str:
    """A step's losses, learning rate and speed, for a progress line."""
    return (f"loss={row['loss']:.3f} ce={row['ce']:.3f} kd={row['kd']:.3f} lr={row['lr']:.2e} "
            f"tok/s={row['tokens_per_s']:.0f}" + (f" val={row['val_loss']:.3f}" if "val_loss" in row else ""))


__all__ = ["Counters", "Trainer", "lr_at"]
