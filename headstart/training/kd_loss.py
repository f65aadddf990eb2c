"""The distillation training loss: ``alpha * CE + (1 - alpha) * T^2 * D(teacher || student)``.

Summed over valid tokens and divided by a ``normalizer`` (the global count of valid tokens); ``D``
is one of the divergences of :mod:`headstart.training.divergence` (forward, reverse, jsd), against
online teacher logits or a cached top-k (:class:`TopK`). Two forms compute it:

* from full logits (:func:`kd_loss`): plain autograd, for small vocabularies and as the reference;
* :func:`chunked_kd_loss`: from the final hidden states through the output heads, a chunk of
  tokens at a time. The gradient of each chunk's logits is computed analytically in the forward
  pass and folded straight into the gradients of the hidden states and head weights, so full
  ``[tokens x vocab]`` fp32 logits of student and teacher never exist, not even for backward.
  Final-logit soft-capping (``cap * tanh(z / cap)``, Gemma 2) is applied to either side's logits
  inside the chunk, its derivative folded into the gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from headstart.config.train import KDConfig
from headstart.errors import ConfigError
from headstart.training.divergence import (  # noqa: F401 (re-exported: the loss's public vocabulary)
    TopK,
    _divergence_and_pull,
    _student_buckets,
    _teacher_buckets,
    divergence,
    divergence_from_logprobs,
    forward_kl,
    jsd,
    reverse_kl,
    topk_divergence,
)

Tensor = torch.Tensor
@dataclass
class LossParts:
    """The differentiable loss and its detached parts (sums over valid tokens), all on the loss's device."""

    loss: Tensor  # scalar: (ce_weight * ce_sum + kd_weight * kd_sum [+ hidden_weight * hidden_sum]) / normalizer
    ce_sum: Tensor
    kd_sum: Tensor
    n_tokens: Tensor
    hidden_sum: Tensor | None = None  # the hidden-state term's sum, when the step adds one


def kd_loss(student_logits: Tensor, labels: Tensor, cfg: KDConfig, *, teacher_logits: Tensor | None = None,
            topk: TopK | None = None, normalizer: float | None = None, vocab: int | None = None) -> LossParts:
    """The full-logit loss (autograd): the reference for :func:`chunked_kd_loss`.

    ``student_logits`` [N, Vs], ``labels`` [N]; the divergence compares the first ``vocab`` entries
    (the tokenizer's vocabulary; padded embedding rows are left out).
    """
    z = student_logits.float()
    valid = labels != cfg.ignore_index
    ce = F.cross_entropy(z, labels, ignore_index=cfg.ignore_index, reduction="sum")
    kd = z.new_zeros(())
    if cfg.uses_teacher:
        vocab = vocab or z.shape[-1]
        if topk is not None:
            d = topk_divergence(z[:, :vocab], topk, cfg.kind, cfg.temperature, cfg.beta)
        elif teacher_logits is not None:
            d = divergence(z[:, :vocab], teacher_logits[:, :vocab], cfg.kind, cfg.temperature, cfg.beta)
        else:
            raise ConfigError(f"--kd {cfg.kind} needs a teacher or a --teacher-cache")
        kd = (d * valid).sum()
    n = valid.sum()
    norm = float(normalizer) if normalizer is not None else max(1, int(n))
    loss = (cfg.ce_weight * ce + cfg.kd_weight * kd) / norm
    return LossParts(loss, ce.detach(), kd.detach(), n)


# -- the chunked, memory-safe form ----------------------------------------------------------------
def default_chunk(vocab: int) -> int:
    """Tokens per chunk so that one [chunk, vocab] fp32 buffer stays near 192 MiB (a few live at once)."""
    return max(8, (3 << 24) // max(1, vocab))


def _kd_grad(lq: Tensor, q: Tensor, teacher_zt: Tensor | None, topk: TopK | None, cfg: KDConfig,
             vocab: int) -> tuple[Tensor, Tensor]:
    """Per-row divergence and its gradient with respect to the student's tempered logits z/T.

    ``lq``/``q``: the student's log-probs/probs at T [c, vocab]; ``teacher_zt``: the teacher's
    logits already divided by T, or the cached ``topk``.
    """
    if topk is None:
        lp = F.log_softmax(teacher_zt[:, :vocab].float(), dim=-1)
        d, pull = _divergence_and_pull(lp, lq, q, cfg.kind, cfg.beta, safe=False)
    else:
        index = topk.index.long()
        lq_b, masked = _student_buckets(lq, index)
        d, pull_b = _divergence_and_pull(_teacher_buckets(topk, cfg.temperature), lq_b, lq_b.exp(), cfg.kind,
                                         cfg.beta, safe=True)
        tail = lq_b[:, -1:].clamp_min(torch.finfo(lq.dtype).min)  # -inf when k covers the vocabulary
        pull = masked.sub_(tail).exp_().mul_(pull_b[:, -1:]).scatter_(-1, index, pull_b[:, :-1])
    return d, pull.sub_(q * pull.sum(-1, keepdim=True))



def _forward_kl_chunk(z: Tensor, labels: Tensor, cfg: KDConfig, vocab: int,
                      teacher_zt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_chunk_grad` for forward KL against online teacher logits, in few passes.

    Only fused row kernels (``log_softmax``, ``softmax``) and in-place elementwise ops touch the
    ``[c, V]`` buffers: ``D = sum p (lp - lq)``, ``dD/d(z/T) = q - p``. At T=1 with no padded rows the
    student's CE and KD distributions coincide and share one log-softmax. ``z`` may be overwritten.
    """
    t, w_ce, w_kd = cfg.temperature, cfg.ce_weight, cfg.kd_weight / cfg.temperature
    valid = labels != cfg.ignore_index
    safe = labels.clamp_min(0).unsqueeze(-1)
    tv = teacher_zt[:, :vocab]
    p = torch.softmax(tv, dim=-1)
    lp = torch.log_softmax(tv, dim=-1)
    plain = t == 1.0 and vocab == z.shape[-1]
    lq = torch.log_softmax(z if plain else z[:, :vocab] * (1.0 / t), dim=-1)
    kd = (lp.sub_(lq).mul_(p).sum(-1) * valid).sum()
    del lp
    if plain:
        ce = -(lq.gather(-1, safe).squeeze(-1) * valid).sum()
        grad = lq.exp_()  # q, the softmax of both terms
        if w_ce + w_kd != 1.0:
            grad.mul_(w_ce + w_kd)
        grad.sub_(p, alpha=w_kd)
    else:
        grad_kd = lq.exp_().sub_(p).mul_(w_kd)
        lse = torch.log_softmax(z, dim=-1)
        ce = -(lse.gather(-1, safe).squeeze(-1) * valid).sum()
        grad = lse.exp_().mul_(w_ce)
        grad[:, :vocab].add_(grad_kd)
    del p
    grad.scatter_add_(-1, safe, torch.full(safe.shape, -w_ce, dtype=grad.dtype, device=grad.device))
    return ce, kd, grad


def _chunk_grad(z: Tensor, labels: Tensor, cfg: KDConfig, vocab: int, teacher_zt: Tensor | None,
                topk: TopK | None) -> tuple[Tensor, Tensor, Tensor]:
    """CE sum, divergence sum and d(ce_weight*CE + kd_weight*D)/dz for one chunk of logits z [c, Vs].

    The gradient is ``w_ce * (softmax(z) - onehot) + (w_kd / T) * dD/d(z/T)``; ``teacher_zt`` is the
    teacher's chunk of logits already divided by T. Rows of ignored tokens are left as they come
    (the caller zeroes their contribution where it costs [c, H], not [c, V]).
    """
    if cfg.uses_teacher and cfg.kind == "forward" and topk is None:
        return _forward_kl_chunk(z, labels, cfg, vocab, teacher_zt)
    valid = labels != cfg.ignore_index
    safe = labels.clamp_min(0).unsqueeze(-1)
    lse = torch.logsumexp(z, -1, keepdim=True)
    ce = ((lse - z.gather(-1, safe)).squeeze(-1) * valid).sum()
    kd = z.new_zeros(())
    t, w_ce = cfg.temperature, cfg.ce_weight
    plain = t == 1.0 and vocab == z.shape[-1]  # the student's KD distribution is its CE softmax
    grad = None
    if cfg.uses_teacher:
        lq = z - lse if plain else F.log_softmax(z[:, :vocab] * (1.0 / t), dim=-1)
        q = lq.exp()
        d, g = _kd_grad(lq, q, teacher_zt, topk, cfg, vocab)
        del lq
        kd = (d * valid).sum()
        if plain:  # q is softmax(z): one buffer holds both terms
            grad = q.mul_(w_ce).add_(g, alpha=cfg.kd_weight / t)
        else:
            del q
    if grad is None:  # w_ce * softmax(z), with w_ce folded into the exponent
        grad = torch.sub(z, lse - math.log(w_ce)).exp_() if w_ce > 0 else torch.zeros_like(z)
        if cfg.uses_teacher:
            grad[:, :vocab].add_(g, alpha=cfg.kd_weight / t)
    grad.scatter_add_(-1, safe, torch.full_like(lse, -w_ce))
    return ce, kd, grad


@dataclass(frozen=True)
class _Plan:
    """What every chunk of one loss call shares."""

    cfg: KDConfig
    vocab: int
    chunk: int
    softcap: float | None  # the student's final-logit soft-capping
    teacher_softcap: float | None


def _capped(z: Tensor, cap: float | None, scale: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """``scale * cap * tanh(z / cap)`` in place of ``z`` and its slope ``1 - tanh^2`` (``z * scale``, None
    without a cap)."""
    if cap is None:
        return (z if scale == 1.0 else z.mul_(scale)), None
    t = z.div_(cap).tanh_()
    slope = torch.mul(t, t).neg_().add_(1.0)
    return t.mul_(cap * scale), slope


class _Accumulator:
    """The gradients of the hidden states, head weight and bias, filled chunk by chunk.

    Ignored tokens are masked on the ``[N, H]`` side: their rows of the hidden states (for the
    head's gradient) and of the hidden states' gradient are zero, so no ``[c, V]`` pass masks them.
    """

    def __init__(self, h: Tensor, h_c: Tensor, w: Tensor, b: Tensor | None, valid: Tensor,
                 need: tuple[bool, bool, bool]):
        self.need_h, self.need_w, self.need_b = need
        self.keep = valid.unsqueeze(-1).to(h_c.dtype)
        self.h_w = h_c * self.keep if self.need_w else None
        self.grad_h = torch.empty_like(h) if self.need_h else None
        # fp32 accumulates in place through addmm; other dtypes start from the first chunk's product
        self.fp32 = h_c.dtype == torch.float32
        self.grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if self.need_w and self.fp32 else None
        self.grad_b = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device) if self.need_b else None

    def add(self, g: Tensor, w_c: Tensor, s: int, e: int, normalizer: Tensor) -> None:
        """Fold one chunk's logit gradient ``g`` [e - s, V] (in the compute dtype) into the gradients."""
        if self.need_h:
            self.grad_h[s:e] = (g @ w_c).div_(normalizer).mul_(self.keep[s:e])
        if self.need_w:
            if self.fp32:
                self.grad_w.addmm_(g.t(), self.h_w[s:e])
            elif self.grad_w is None:
                self.grad_w = (g.t() @ self.h_w[s:e]).float()
            else:
                self.grad_w.add_(g.t() @ self.h_w[s:e])
        if self.need_b:
            self.grad_b += (g * self.keep[s:e]).sum(0, dtype=torch.float32)

    def finish(self, normalizer: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The three gradients of the loss (``None`` where not needed)."""
        for grad in (self.grad_w, self.grad_b):
            if grad is not None:
                grad.div_(normalizer)
        return self.grad_h, self.grad_w, self.grad_b


class _ChunkedLoss(torch.autograd.Function):
    """Loss through the output head, chunk by chunk; gradients are formed during the forward."""

    @staticmethod
    def forward(ctx, h, w, b, teacher_h, teacher_w, labels, topk_logp, topk_index, topk_rest, plan, normalizer):
        cfg, n = plan.cfg, h.shape[0]
        # the head's matrix products run in the autocast dtype when autocast is on; the softmax arithmetic in fp32
        dev = h.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
        h_c, w_c = h.to(cdt), w.to(cdt)
        th_c = tw_c = None
        if teacher_h is not None:  # uncapped, the teacher's logits at T come from scaling [N, H], not [N, V]
            th_c = teacher_h if plan.teacher_softcap is not None else teacher_h * (1.0 / cfg.temperature)
            th_c, tw_c = th_c.to(cdt), teacher_w.to(cdt)
        acc = _Accumulator(h, h_c, w, b, labels != cfg.ignore_index, ctx.needs_input_grad[:3])
        ce_sum = torch.zeros((), dtype=torch.float32, device=h.device)
        kd_sum = torch.zeros_like(ce_sum)
        # logits land in two reused buffers: fresh [chunk, V] allocations per chunk cost ~10% on CPU
        rows = min(plan.chunk, n)
        z_buf = h_c.new_empty(rows, w.shape[0])
        tz_buf = th_c.new_empty(rows, tw_c.shape[0]) if th_c is not None else None
        for s in range(0, n, plan.chunk):
            e = min(s + plan.chunk, n)
            z = torch.mm(h_c[s:e], w_c.t(), out=z_buf[: e - s]).float()
            z, slope = _capped(z if b is None else z.add_(b.float()), plan.softcap)
            tz = None
            if th_c is not None:
                tz = torch.mm(th_c[s:e], tw_c.t(), out=tz_buf[: e - s]).float()
                if plan.teacher_softcap is not None:
                    tz, _ = _capped(tz, plan.teacher_softcap, 1.0 / cfg.temperature)
            topk = TopK(topk_logp[s:e], topk_index[s:e], topk_rest[s:e]) if topk_logp is not None else None
            ce, kd, g = _chunk_grad(z, labels[s:e], cfg, plan.vocab, tz, topk)
            del z, tz
            if slope is not None:
                g.mul_(slope)
            ce_sum += ce
            kd_sum += kd
            acc.add(g.to(cdt), w_c, s, e, normalizer)
        loss = (cfg.ce_weight * ce_sum + cfg.kd_weight * kd_sum) / normalizer
        grads = acc.finish(normalizer)
        ctx.save_for_backward(*(t for t in grads if t is not None))
        ctx.which = tuple(t is not None for t in grads)
        ctx.dtypes = (h.dtype, w.dtype, None if b is None else b.dtype)
        ctx.mark_non_differentiable(ce_sum, kd_sum)
        return loss, ce_sum, kd_sum

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kd):
        saved = iter(ctx.saved_tensors)
        out = []
        for need, dtype in zip(ctx.which, ctx.dtypes):
            out.append(next(saved).mul_(grad_loss).to(dtype) if need else None)  # ours alone: scaled in place
        return (*out, None, None, None, None, None, None, None, None)


def chunked_kd_loss(hidden: Tensor, head: torch.nn.Module | Tensor, labels: Tensor, cfg: KDConfig, *,
                    teacher_hidden: Tensor | None = None, teacher_head: torch.nn.Module | Tensor | None = None,
                    topk: TopK | None = None, normalizer: float | Tensor | None = None, vocab: int | None = None,
                    chunk: int | None = None, softcap: float | None = None,
                    teacher_softcap: float | None = None) -> LossParts:
    """The loss from final hidden states ``[N, H]`` through the output head, chunk by chunk.

    ``head`` is the student's output layer (a Linear or its weight ``[Vs, H]``); the teacher is
    either ``teacher_hidden`` ``[N, Ht]`` with ``teacher_head``, or a cached ``topk``. ``softcap`` /
    ``teacher_softcap``: each side's final-logit soft-capping. Equal in value and gradient to
    :func:`kd_loss` on the (capped) full logits; peak memory is a few ``[chunk, vocab]`` fp32 buffers.
    ``normalizer`` may be a tensor on the device (then nothing here waits for the host).
    """
    w, b = (head, None) if isinstance(head, Tensor) else (head.weight, head.bias)
    tw = None
    if cfg.uses_teacher:
        if topk is None and (teacher_hidden is None or teacher_head is None):
            raise ConfigError(f"--kd {cfg.kind} needs a teacher or a --teacher-cache")
        if topk is None:
            tw = teacher_head if isinstance(teacher_head, Tensor) else teacher_head.weight
            teacher_hidden = teacher_hidden.detach()
        else:
            teacher_hidden = None
    else:
        teacher_hidden, topk = None, None
    n = (labels != cfg.ignore_index).sum()
    if normalizer is None:
        norm = n.clamp_min(1).to(torch.float32)
    else:
        norm = torch.as_tensor(normalizer, dtype=torch.float32, device=hidden.device)
    plan = _Plan(cfg, vocab or w.shape[0], chunk or default_chunk(w.shape[0]), softcap, teacher_softcap)
    tk = (topk.logp, topk.index, topk.log_rest) if topk is not None else (None, None, None)
    loss, ce, kd = _ChunkedLoss.apply(hidden, w, b, teacher_hidden, tw, labels, *tk, plan, norm)
    return LossParts(loss, ce, kd, n)
