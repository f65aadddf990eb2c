"""One training step, top to bottom: the student with its loss, the teacher's signal, the update.

:class:`DistillModule` keeps the loss inside ``forward`` (so DDP and FSDP2 see the output head's
use); :func:`teacher_signal` runs the teacher under ``no_grad`` (or reads its cached top-k);
:func:`train_step` is the whole optimisation step (backward per micro-batch, the finite check,
clipping, the optimizer); :func:`evaluate` scores fixed windows through :mod:`headstart.lm_loss`.
Hidden states and the output head come from the family's adapter, so a family whose logits are not
a plain linear head is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headstart import parallel
from headstart.errors import HeadstartError
from headstart.lm_loss import DEFAULT_CHUNK, chunked_ce_sum
from headstart.training.hidden_loss import HiddenMap, capture, hidden_loss_sum
from headstart.training.kd_loss import KDConfig, TopK, chunked_kd_loss


class DivergedError(HeadstartError):
    """The loss or the gradient norm became NaN or infinite."""


class DistillModule(nn.Module):
    """The student plus its loss: forward returns ``(loss, ce_sum, kd_sum, hidden_sum, n_tokens)``.

    Keeping the loss inside ``forward`` lets DDP and FSDP2 see the output head's use (its weight
    is read through the chunked loss, never as a full logits tensor). ``hidden_layers`` are the
    student layers the hidden-state term (weight ``hidden_weight``) matches when the teacher's
    states are passed. ``ce_only`` trains on cross-entropy alone; ``score`` only scores (validation,
    through :func:`headstart.lm_loss.chunked_ce_sum`, so it agrees with fitness and ``eval``).
    """

    def __init__(self, student: nn.Module, kd: KDConfig, vocab: int, chunk: int | None = None,
                 hidden_weight: float = 0.0, hidden_layers: tuple[int, ...] = ()):
        super().__init__()
        from headstart.models import get_adapter

        self.adapter = get_adapter(student.config)  # the family's model boundary: hidden states and head
        self.adapter.check_linear_logits("training")
        self.student, self.kd, self.vocab, self.chunk = student, kd, vocab, chunk
        self.hidden_weight, self.hidden_layers = hidden_weight, hidden_layers

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, teacher_hidden: torch.Tensor | None = None,
                teacher_head: torch.Tensor | None = None, topk: TopK | None = None, normalizer: float | None = None,
                ce_only: bool = False, teacher_states: list[torch.Tensor] | None = None,
                score: bool = False) -> tuple[torch.Tensor, ...]:
        matched = teacher_states is not None and not (ce_only or score)
        with capture(_blocks(self.student), self.hidden_layers if matched else ()) as states:
            hidden = self.adapter.hidden_states(self.student, input_ids)
        if score:  # validation (no gradient): the one cross-entropy evaluator, as fitness and eval use
            ce_sum, n = chunked_ce_sum(lambda h: self.adapter.logits(self.student, h), hidden.flatten(0, 1),
                                       labels.flatten(), self.chunk or DEFAULT_CHUNK)
            zero = torch.zeros((), device=hidden.device)
            return zero, ce_sum, zero, zero, torch.tensor(n)
        parts = chunked_kd_loss(
            hidden.flatten(0, 1), self.adapter.output_head(self.student), labels.flatten(),
            KDConfig("none") if ce_only else self.kd,
            teacher_hidden=teacher_hidden, teacher_head=teacher_head, topk=topk, normalizer=normalizer,
            vocab=self.vocab, chunk=self.chunk,
        )
        loss, hidden_sum = parts.loss, torch.zeros((), device=hidden.device)
        if matched:
            hidden_sum = hidden_loss_sum(states, teacher_states)
            loss = loss + self.hidden_weight * hidden_sum / (normalizer or parts.n_tokens.clamp_min(1))
        return loss, parts.ce_sum, parts.kd_sum, hidden_sum.detach(), parts.n_tokens


@dataclass
class StepContext:
    """What one training step needs."""

    model: nn.Module  # DistillModule, possibly DDP/FSDP-wrapped
    optimizer: torch.optim.Optimizer
    kd: KDConfig
    clip: float
    autocast: torch.autocast
    teacher: nn.Module | None = None
    cache: Any = None  # headstart.training.teacher_cache.TeacherCache
    hidden: HiddenMap | None = None  # the hidden-state term's layers and channels (online teacher only)
    hidden_weight: float = 0.0


def teacher_signal(ctx: StepContext, batch: torch.Tensor) -> dict[str, Any]:
    """The teacher's side of the loss for ``batch`` [B, L+1]: final hidden states + head (or cached
    top-k), and its residual stream at the matched layers, sliced to the student's channels."""
    if ctx.cache is not None:
        return {"topk": ctx.cache.lookup(batch)} if ctx.kd.uses_teacher else {}  # refuses windows it lacks
    if not ctx.kd.uses_teacher and ctx.hidden is None:
        return {}
    layers, channels = (), None
    if ctx.hidden is not None:
        layers, channels = ctx.hidden.teacher_layers, torch.as_tensor(ctx.hidden.channels, device=batch.device)
    with torch.no_grad(), ctx.autocast, capture(_blocks(ctx.teacher), layers, channels) as states:
        adapter = _adapter(ctx.teacher)
        hidden = adapter.hidden_states(ctx.teacher, batch[:, :-1])
    out: dict[str, Any] = {"teacher_states": states} if ctx.hidden is not None else {}
    if ctx.kd.uses_teacher:
        out.update(teacher_hidden=hidden.flatten(0, 1), teacher_head=adapter.output_head(ctx.teacher).weight)
    return out


def train_step(ctx: StepContext, batches: list[torch.Tensor], step: int, distill: bool = True) -> dict[str, float]:
    """One optimizer step over ``batches`` (the micro-batches of gradient accumulation).

    The loss is normalised by the global count of valid tokens across micro-batches and ranks;
    a non-finite loss or gradient norm raises :class:`DivergedError` before the optimizer runs.
    With ``distill`` off (past ``--kd-until``) the teacher is not run and the loss is CE only.
    """
    ignore = ctx.kd.ignore_index
    n_valid = parallel.all_reduce_sum(torch.tensor([float(sum((b[:, 1:] != ignore).sum() for b in batches))]))
    # DDP/FSDP average gradients over ranks, so each rank divides by its share of the global count.
    normalizer = max(1.0, float(n_valid)) / parallel.world_size()
    sums = torch.zeros(3)
    for i, batch in enumerate(batches):
        signal_ = teacher_signal(ctx, batch) if distill else {}
        with parallel.no_grad_sync(ctx.model, skip=i < len(batches) - 1), ctx.autocast:
            loss, ce_sum, kd_sum, hidden_sum, _ = ctx.model(batch[:, :-1], batch[:, 1:], normalizer=normalizer,
                                                            ce_only=not distill, **signal_)
        loss.backward()
        sums += torch.stack([t.detach().float().cpu() for t in (ce_sum, kd_sum, hidden_sum)])
        del loss, signal_
    parallel.all_reduce_sum(sums)
    ce, kd, hidden = (sums / max(1.0, float(n_valid))).tolist()
    kd_on = distill and ctx.kd.kind != "none"
    loss = (ctx.kd.ce_weight if kd_on else 1.0) * ce + (ctx.kd.kd_weight * kd if kd_on else 0.0)
    loss += ctx.hidden_weight * hidden if distill and ctx.hidden is not None else 0.0
    if not math.isfinite(loss):
        ctx.optimizer.zero_grad(set_to_none=True)
        raise DivergedError(f"the loss became {loss} at step {step}")
    params = [p for p in ctx.model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, ctx.clip if ctx.clip > 0 else float("inf"))
    norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if not math.isfinite(norm):
        ctx.optimizer.zero_grad(set_to_none=True)
        raise DivergedError(f"the gradient norm became {norm} at step {step}")
    ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss, "ce": ce, "kd": kd, "hidden": hidden, "grad_norm": norm, "tokens": float(n_valid)}


@torch.no_grad()
def evaluate(model: nn.Module, windows: torch.Tensor, batch_size: int, autocast: torch.autocast,
             split: bool = True) -> dict[str, float]:
    """Mean next-token CE and perplexity of the student on fixed windows [n, L+1].

    With ``split`` each rank evaluates its share and the sums are all-reduced; FSDP needs every rank
    to run every forward, so it passes ``split=False``.
    """
    module = parallel.unwrap(model)
    was_training = module.training
    module.eval()
    mine = windows[parallel.rank()::parallel.world_size()] if split else windows
    sums = torch.zeros(2)
    for s in range(0, mine.shape[0], batch_size):
        batch = mine[s:s + batch_size]
        with autocast:
            _, ce_sum, _, _, n = module(batch[:, :-1], batch[:, 1:], score=True)
        sums += torch.stack([ce_sum.float().cpu(), n.float().cpu()])
    if split:
        parallel.all_reduce_sum(sums)
    module.train(was_training)
    val = float(sums[0] / sums[1].clamp_min(1))
    return {"val_loss": val, "val_ppl": math.exp(min(val, 50.0))}


def _adapter(model: nn.Module) -> Any:
    """The family adapter of a Hugging Face causal LM."""
    from headstart.models import get_adapter

    return get_adapter(model.config)


def _blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM (the FSDP and compile units)."""
    return _adapter(model).decoder_layers(model)


__all__ = ["DistillModule", "DivergedError", "StepContext", "evaluate", "teacher_signal", "train_step"]
