"""One training step, top to bottom: the teacher's targets, the student with its loss, the update.

The step's contract, in types:

* :func:`teacher_targets` turns a micro-batch into :class:`TeacherTargets`: the teacher's final
  hidden states and head weight (online, run without autograd state) or its cached top-k, and its
  residual stream at the matched layers;
* :class:`DistillModule` turns a micro-batch and those targets into a
  :class:`~headstart.training.kd_loss.LossParts`: the differentiable loss and the sums that are logged.
  The loss stays inside ``forward`` so that DDP and FSDP2 see the output head's use (its weight is
  read through the chunked loss, never as a full logits tensor); :meth:`DistillModule.score` scores
  (validation) through :mod:`headstart.lm_loss`, as fitness and ``eval`` do;
* :func:`train_step` is the whole optimisation step (backward per micro-batch, the finite check,
  clipping, the optimizer); :func:`evaluate` scores fixed windows.

Host syncs: none inside a micro-batch. The step's sums, token count and gradient norm stay on the
device and reach the host together, once per step, before the optimizer (which must not run on a
non-finite loss); an evaluation syncs once at its end.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from headstart import parallel
from headstart.errors import HeadstartError
from headstart.lm_loss import DEFAULT_CHUNK, IGNORE_INDEX, chunked_ce
from headstart.training.hidden_loss import HiddenMap, capture, hidden_loss_sum
from headstart.training.kd_loss import KDConfig, LossParts, TopK, chunked_kd_loss

Tensor = torch.Tensor


class DivergedError(HeadstartError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class TeacherTargets:
    """What the teacher gives one micro-batch; a step's loss uses the fields it needs.

    The logits come from ``hidden`` through ``head`` (online teacher, capped by ``softcap`` where its
    family soft-caps) or from ``topk`` (a cache); ``states`` are the targets of the hidden-state term.
    """

    hidden: Tensor | None = None  # final hidden states [N, Ht]
    head: Tensor | None = None  # the output head's weight [Vt, Ht]
    softcap: float | None = None  # final-logit soft-capping of the teacher's family
    topk: TopK | None = None  # or: the cached top-k of its log-probs, [N, k]
    states: list[Tensor] | None = None  # residual stream at the matched layers, in the student's channels


class DistillModule(nn.Module):
    """The student plus its loss: ``forward`` returns the micro-batch's :class:`LossParts`.

    ``hidden_layers`` are the student layers the hidden-state term (weight ``hidden_weight``) matches
    when the targets carry the teacher's states. Families that soft-cap their final logits are
    trained with the cap inside the fused loss.
    """

    def __init__(self, student: nn.Module, kd: KDConfig, vocab: int, chunk: int | None = None,
                 hidden_weight: float = 0.0, hidden_layers: tuple[int, ...] = ()):
        super().__init__()
        from headstart.models import get_adapter

        self.adapter = get_adapter(student.config)  # the family's model boundary: hidden states and head
        self.student, self.kd, self.vocab, self.chunk = student, kd, vocab, chunk
        self.hidden_weight, self.hidden_layers = hidden_weight, hidden_layers

    def forward(self, input_ids: Tensor, labels: Tensor, targets: TeacherTargets | None = None,
                tokens: Tensor | None = None) -> LossParts:
        """The loss of ``input_ids`` [B, L] against ``labels`` [B, L]; cross-entropy alone without ``targets``.

        ``tokens`` is the step's global count of valid tokens (an integer tensor, which mixed-precision
        input casting leaves alone): each rank divides by its share, since DDP and FSDP average gradients
        over ranks. Without it the loss is this batch's mean.
        """
        matched = targets is not None and targets.states is not None
        with capture(_blocks(self.student), self.hidden_layers if matched else ()) as states:
            hidden = self.adapter.hidden_states(self.student, input_ids)
        normalizer = None if tokens is None else tokens.clamp_min(1) / parallel.world_size()
        t = targets or TeacherTargets()
        parts = chunked_kd_loss(
            hidden.flatten(0, 1), self.adapter.output_head(self.student), labels.flatten(),
            KDConfig("none") if targets is None else self.kd,
            teacher_hidden=t.hidden, teacher_head=t.head, topk=t.topk, normalizer=normalizer, vocab=self.vocab,
            chunk=self.chunk, softcap=self.adapter.logit_softcap, teacher_softcap=t.softcap,
        )
        hidden_sum = torch.zeros((), device=hidden.device)
        if matched:
            hidden_sum = hidden_loss_sum(states, t.states)
            norm = parts.n_tokens.clamp_min(1) if normalizer is None else normalizer
            parts.loss = parts.loss + self.hidden_weight * hidden_sum / norm
        parts.hidden_sum = hidden_sum.detach()
        return parts

    @torch.no_grad()
    def score(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(float64 CE sum, counted tokens)`` of ``input_ids`` against ``labels`` (no gradient, no host
        sync), through :func:`headstart.lm_loss.chunked_ce`, so validation agrees with fitness and ``eval``."""
        hidden = self.adapter.hidden_states(self.student, input_ids)
        ce = chunked_ce(lambda h: self.adapter.logits(self.student, h), hidden.flatten(0, 1), labels.flatten(),
                        self.chunk or DEFAULT_CHUNK)
        return ce, (labels != IGNORE_INDEX).sum()


@dataclass
class StepContext:
    """What one training step needs."""

    model: nn.Module  # DistillModule, possibly DDP/FSDP-wrapped
    optimizer: torch.optim.Optimizer
    kd: KDConfig
    clip: float
    autocast: torch.autocast
    teacher: nn.Module | None = None  # in the precision it computes in (the caller casts it)
    cache: Any = None  # headstart.training.teacher_cache.TeacherCache
    hidden: HiddenMap | None = None  # the hidden-state term's layers and channels (online teacher only)
    hidden_weight: float = 0.0
    _channels: Tensor | None = field(default=None, init=False, repr=False)  # ``hidden.channels`` on the device


def teacher_targets(ctx: StepContext, batch: Tensor) -> TeacherTargets:
    """The teacher's side of the loss for ``batch`` [B, L+1]: final hidden states + head (or cached
    top-k), and its residual stream at the matched layers, sliced to the student's channels."""
    if ctx.cache is not None:  # the cache refuses windows it lacks
        return TeacherTargets(topk=ctx.cache.lookup(batch)) if ctx.kd.uses_teacher else TeacherTargets()
    if not ctx.kd.uses_teacher and ctx.hidden is None:
        return TeacherTargets()
    layers: tuple[int, ...] = ()
    if ctx.hidden is not None:
        layers = ctx.hidden.teacher_layers
        if ctx._channels is None or ctx._channels.device != batch.device:
            ctx._channels = torch.as_tensor(ctx.hidden.channels, device=batch.device)
    adapter = _adapter(ctx.teacher)
    with _without_autograd(ctx.teacher), ctx.autocast, capture(_blocks(ctx.teacher), layers, ctx._channels) as states:
        hidden = adapter.hidden_states(ctx.teacher, batch[:, :-1])
    out = TeacherTargets(states=states if ctx.hidden is not None else None)
    if ctx.kd.uses_teacher:
        out.hidden, out.head = hidden.flatten(0, 1), adapter.output_head(ctx.teacher).weight
        out.softcap = adapter.logit_softcap
    return out


def train_step(ctx: StepContext, batches: list[Tensor], step: int, distill: bool = True) -> dict[str, float]:
    """One optimizer step over ``batches`` (the micro-batches of gradient accumulation).

    The loss is normalised by the global count of valid tokens across micro-batches and ranks;
    a non-finite loss or gradient norm raises :class:`DivergedError` before the optimizer runs.
    With ``distill`` off (past ``--kd-until``) the teacher is not run and the loss is CE only. The
    logged loss is the sum of the micro-batches' losses (each rank's divided by its share).
    """
    counts = torch.stack([(b[:, 1:] != ctx.kd.ignore_index).sum() for b in batches]).sum()
    tokens = parallel.all_reduce_sum(counts.reshape(1))[0]
    sums = torch.zeros(4, device=tokens.device)  # loss, CE, KD, hidden: on the device until the step's end
    for i, batch in enumerate(batches):
        targets = teacher_targets(ctx, batch) if distill else None
        with parallel.no_grad_sync(ctx.model, skip=i < len(batches) - 1), ctx.autocast:
            parts = ctx.model(batch[:, :-1], batch[:, 1:], targets, tokens)
        parts.loss.backward()
        sums += torch.stack([parts.loss.detach(), parts.ce_sum, parts.kd_sum, parts.hidden_sum]).float()
        del parts, targets
    parallel.all_reduce_sum(sums)
    n = tokens.float().clamp_min(1).reshape(1)
    params = [p for p in ctx.model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, ctx.clip if ctx.clip > 0 else float("inf"))
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    logged = torch.cat([sums[:1] / parallel.world_size(), sums[1:] / n, norm.reshape(1).float(),
                        tokens.reshape(1).float()])
    loss, ce, kd, hidden, grad_norm, n_tokens = logged.tolist()  # the step's one host sync
    if not math.isfinite(loss):
        ctx.optimizer.zero_grad(set_to_none=True)
        raise DivergedError(f"the loss became {loss} at step {step}")
    if not math.isfinite(grad_norm):
        ctx.optimizer.zero_grad(set_to_none=True)
        raise DivergedError(f"the gradient norm became {grad_norm} at step {step}")
    ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss, "ce": ce, "kd": kd, "hidden": hidden, "grad_norm": grad_norm, "tokens": n_tokens}


@torch.no_grad()
def evaluate(model: nn.Module, windows: Tensor, batch_size: int, autocast: torch.autocast,
             split: bool = True) -> dict[str, float]:
    """Mean next-token CE and perplexity of the student on fixed windows [n, L+1].

    With ``split`` each rank evaluates its share and the sums are all-reduced; FSDP needs every rank
    to run every forward, so it passes ``split=False``.
    """
    module = parallel.unwrap(model)
    score = parallel.forward_method(module, "score")  # under FSDP2, gathers the root's parameters like forward
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    mine = windows[parallel.rank()::parallel.world_size()] if split else windows
    sums = torch.zeros(2, device=device)
    for s in range(0, mine.shape[0], batch_size):
        batch = mine[s:s + batch_size].to(device, non_blocking=True)
        with autocast:
            ce_sum, n = score(batch[:, :-1], batch[:, 1:])
        sums += torch.stack([ce_sum.float(), n.float()])
    if split:
        parallel.all_reduce_sum(sums)
    module.train(was_training)
    val = float(sums[0] / sums[1].clamp_min(1))  # the evaluation's one host sync
    return {"val_loss": val, "val_ppl": math.exp(min(val, 50.0))}


def _without_autograd(teacher: nn.Module) -> contextlib.AbstractContextManager:
    """No autograd state for the teacher's forward: ``inference_mode``, or ``no_grad`` for an FSDP-sharded
    teacher (FSDP2 swaps its parameters in and out, which inference tensors do not allow)."""
    return torch.no_grad() if parallel.is_sharded(teacher) else torch.inference_mode()


def _adapter(model: nn.Module) -> Any:
    """The family adapter of a Hugging Face causal LM."""
    from headstart.models import get_adapter

    return get_adapter(model.config)


def _blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM (the FSDP and compile units)."""
    return _adapter(model).decoder_layers(model)


__all__ = ["DistillModule", "DivergedError", "StepContext", "TeacherTargets", "evaluate", "teacher_targets",
           "train_step"]
