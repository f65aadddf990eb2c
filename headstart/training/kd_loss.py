"""Distillation losses: pure functions, each checked against its textbook formula in the tests.

The training loss is ``alpha * CE + (1 - alpha) * T^2 * D(teacher || student)`` summed over valid
tokens and divided by a ``normalizer`` (the global count of valid tokens), with ``D`` one of

* ``forward``: KL(p || q) = sum_v p_v (log p_v - log q_v)
* ``reverse``: KL(q || p) = sum_v q_v (log q_v - log p_v)
* ``jsd``: generalised Jensen-Shannon, beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q

where ``p = softmax(teacher_logits / T)`` and ``q = softmax(student_logits / T)``.

Two forms compute it:

* from full logits (:func:`kd_loss`, :func:`divergence`): plain autograd, for small vocabularies
  and as the reference;
* :func:`chunked_kd_loss`: from the final hidden states through the output heads, a chunk of
  tokens at a time. The gradient of each chunk's logits is computed analytically in the forward
  pass and folded straight into the gradients of the hidden states and head weights, so full
  ``[tokens x vocab]`` fp32 logits of student and teacher never exist, not even for backward.

The teacher may also be a cached top-k (:class:`TopK`): its ``k`` largest log-probabilities at
T=1, their token ids and the log of the remaining probability mass. The divergence is then taken
over ``k + 1`` buckets (the ``k`` tokens and "everything else"), with the temperature applied to the
bucket distribution; when ``k`` equals the vocabulary this is exactly the full-vocabulary loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from headstart.config.train import KDConfig
from headstart.errors import ConfigError

Tensor = torch.Tensor
@dataclass
class TopK:
    """A cached teacher: top-k log-probabilities at T=1, token ids, log of the remaining mass."""

    logp: Tensor  # [N, k] float (stored fp16)
    index: Tensor  # [N, k] integer token ids
    log_rest: Tensor  # [N] log(1 - sum exp(logp)), -inf when k covers the vocabulary


@dataclass
class LossParts:
    """The differentiable loss and its detached parts (sums over valid tokens)."""

    loss: Tensor  # scalar: (ce_weight * ce_sum + kd_weight * kd_sum) / normalizer
    ce_sum: Tensor
    kd_sum: Tensor
    n_tokens: Tensor


# -- divergences over (log-)distributions ---------------------------------------------------------
def _mul0(p: Tensor, x: Tensor) -> Tensor:
    """``p * x`` with ``0 * anything = 0`` (so that empty buckets contribute nothing)."""
    return torch.where(p > 0, p * torch.where(p > 0, x, torch.zeros_like(x)), torch.zeros_like(p))


def divergence_from_logprobs(lp: Tensor, lq: Tensor, kind: str, beta: float = 0.5) -> Tensor:
    """Per-row D(p || q) from teacher log-probs ``lp`` and student log-probs ``lq`` (last dim)."""
    p, q = lp.exp(), lq.exp()
    if kind == "forward":
        return _mul0(p, lp - lq).sum(-1)
    if kind == "reverse":
        return _mul0(q, lq - lp).sum(-1)
    if kind == "jsd":
        lm = torch.logaddexp(math.log(beta) + lp, math.log(1 - beta) + lq)
        return beta * _mul0(p, lp - lm).sum(-1) + (1 - beta) * _mul0(q, lq - lm).sum(-1)
    raise ConfigError(f"unknown divergence {kind!r}; use forward, reverse or jsd")


def _divergence_and_pull(lp: Tensor, lq: Tensor, q: Tensor, kind: str, beta: float,
                         safe: bool) -> tuple[Tensor, Tensor]:
    """D per row and ``H_j = Q_j * dD/dQ_j`` per bucket (constants dropped: they cancel below).

    The gradient of D with respect to the student logits at temperature T is then
    ``(h - q * sum(H)) / T`` where ``h`` spreads ``H`` over the tokens of each bucket. ``safe``
    guards against empty buckets (log-prob -inf); full-vocabulary log-softmaxes are always finite.
    """
    mul = _mul0 if safe else torch.mul
    if kind == "forward":
        p = lp.exp()
        return mul(p, lp - lq).sum(-1), p.neg_()
    if kind == "reverse":
        term = mul(q, lq - lp)
        return term.sum(-1), term
    lm = torch.logaddexp(math.log(beta) + lp, math.log(1 - beta) + lq)
    q_term = mul(q, lq - lm)
    d = beta * mul(lp.exp(), lp - lm).sum(-1) + (1 - beta) * q_term.sum(-1)
    return d, q_term.mul_(1 - beta)


def divergence(student_logits: Tensor, teacher_logits: Tensor, kind: str, temperature: float = 1.0,
               beta: float = 0.5) -> Tensor:
    """Per-token D(teacher || student) at ``temperature`` from full logits ``[..., V]`` (autograd)."""
    lq = F.log_softmax(student_logits.float() / temperature, dim=-1)
    lp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return divergence_from_logprobs(lp, lq, kind, beta)


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-token KL(p_teacher || q_student) at ``temperature``."""
    return divergence(student_logits, teacher_logits, "forward", temperature)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-token KL(q_student || p_teacher) at ``temperature``."""
    return divergence(student_logits, teacher_logits, "reverse", temperature)


def jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5, temperature: float = 1.0) -> Tensor:
    """Per-token generalised Jensen-Shannon divergence with teacher weight ``beta``."""
    return divergence(student_logits, teacher_logits, "jsd", temperature, beta)


def _teacher_buckets(topk: TopK, temperature: float) -> Tensor:
    """Teacher log-probs over k + 1 buckets at ``temperature``: [N, k + 1]."""
    logits = torch.cat([topk.logp.float(), topk.log_rest.float().unsqueeze(-1)], dim=-1)
    return F.log_softmax(logits / temperature, dim=-1)


def _student_buckets(lq: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Student log-probs over the teacher's k + 1 buckets, and ``lq`` with the top-k masked out."""
    masked = lq.scatter(-1, index, float("-inf"))
    return torch.cat([lq.gather(-1, index), torch.logsumexp(masked, -1, keepdim=True)], dim=-1), masked


def topk_divergence(student_logits: Tensor, topk: TopK, kind: str, temperature: float = 1.0,
                    beta: float = 0.5) -> Tensor:
    """Per-token D(cached teacher || student) over the k + 1 buckets, from full student logits."""
    lq = F.log_softmax(student_logits.float() / temperature, dim=-1)
    lq_b, _ = _student_buckets(lq, topk.index.long())
    return divergence_from_logprobs(_teacher_buckets(topk, temperature), lq_b, kind, beta)


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
    if not bool(valid.all()):
        grad.mul_(valid.unsqueeze(-1))
    return ce, kd, grad


def _chunk_grad(z: Tensor, labels: Tensor, cfg: KDConfig, vocab: int, teacher_zt: Tensor | None,
                topk: TopK | None) -> tuple[Tensor, Tensor, Tensor]:
    """CE sum, divergence sum and d(ce_weight*CE + kd_weight*D)/dz for one chunk of logits z [c, Vs].

    The gradient is ``w_ce * (softmax(z) - onehot) + (w_kd / T) * dD/d(z/T)``; ``teacher_zt`` is the
    teacher's chunk of logits already divided by T.
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
    if not bool(valid.all()):
        grad.mul_(valid.unsqueeze(-1))
    return ce, kd, grad


class _ChunkedLoss(torch.autograd.Function):
    """Loss through the output head, chunk by chunk; gradients are formed during the forward."""

    @staticmethod
    def forward(ctx, h, w, b, teacher_h, teacher_w, labels, topk_logp, topk_index, topk_rest,
                cfg, vocab, normalizer, chunk):
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        # the head's matrix products run in the autocast dtype when autocast is on (bf16 on CPUs with
        # AVX512-BF16 and on GPUs: 4.5x faster than fp32 on a 2-core Zen 4); the softmax arithmetic stays fp32
        dev = h.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
        h_c, w_c = h.to(cdt), w.to(cdt)
        th_c = tw_c = None
        if teacher_h is not None:  # the teacher's logits at temperature T: scale [N, H], not [N, V]
            th_c = (teacher_h * (1.0 / cfg.temperature)).to(cdt)
            tw_c = teacher_w.to(cdt)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        grad_b = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device) if need_b else None
        ce_sum = torch.zeros((), dtype=torch.float32, device=h.device)
        kd_sum = torch.zeros_like(ce_sum)
        # logits land in two reused buffers: fresh [chunk, V] allocations per chunk cost ~10% on CPU
        rows = min(chunk, h.shape[0])
        z_buf = h_c.new_empty(rows, w.shape[0])
        tz_buf = th_c.new_empty(rows, tw_c.shape[0]) if th_c is not None else None
        for s in range(0, h.shape[0], chunk):
            e = min(s + chunk, h.shape[0])
            z = torch.mm(h_c[s:e], w_c.t(), out=z_buf[: e - s]).float()
            z = z if b is None else z.add_(b.float())
            tz = None if th_c is None else torch.mm(th_c[s:e], tw_c.t(), out=tz_buf[: e - s]).float()
            topk = TopK(topk_logp[s:e], topk_index[s:e], topk_rest[s:e]) if topk_logp is not None else None
            ce, kd, g = _chunk_grad(z, labels[s:e], cfg, vocab, tz, topk)
            del z, tz
            ce_sum += ce
            kd_sum += kd
            g = g.to(cdt)
            if need_h:
                grad_h[s:e] = (g @ w_c).div_(normalizer)
            if need_w:
                if cdt == torch.float32:
                    grad_w.addmm_(g.t(), h_c[s:e])
                else:
                    grad_w.add_(g.t() @ h_c[s:e])
            if need_b:
                grad_b += g.sum(0, dtype=torch.float32)
        loss = (cfg.ce_weight * ce_sum + cfg.kd_weight * kd_sum) / normalizer
        if need_w:
            grad_w.div_(normalizer)
        if need_b:
            grad_b.div_(normalizer)
        ctx.save_for_backward(*(t for t in (grad_h, grad_w, grad_b) if t is not None))
        ctx.which = (need_h, need_w, need_b)
        ctx.dtypes = (h.dtype, w.dtype, None if b is None else b.dtype)
        ctx.mark_non_differentiable(ce_sum, kd_sum)
        return loss, ce_sum, kd_sum

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kd):
        saved = iter(ctx.saved_tensors)
        out = []
        for need, dtype in zip(ctx.which, ctx.dtypes):
            out.append((next(saved) * grad_loss).to(dtype) if need else None)
        return (*out, None, None, None, None, None, None, None, None, None, None)


def chunked_kd_loss(hidden: Tensor, head: torch.nn.Module | Tensor, labels: Tensor, cfg: KDConfig, *,
                    teacher_hidden: Tensor | None = None, teacher_head: torch.nn.Module | Tensor | None = None,
                    topk: TopK | None = None, normalizer: float | None = None, vocab: int | None = None,
                    chunk: int | None = None) -> LossParts:
    """The loss from final hidden states ``[N, H]`` through the output head, chunk by chunk.

    ``head`` is the student's output layer (a Linear or its weight ``[Vs, H]``); the teacher is
    either ``teacher_hidden`` ``[N, Ht]`` with ``teacher_head``, or a cached ``topk``. Equal in
    value and gradient to :func:`kd_loss` on the full logits; peak memory is a few
    ``[chunk, vocab]`` fp32 buffers.
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
    vocab = vocab or w.shape[0]
    valid = labels != cfg.ignore_index
    n = valid.sum()
    norm = float(normalizer) if normalizer is not None else float(max(1, int(n)))
    chunk = chunk or default_chunk(w.shape[0])
    tk = (topk.logp, topk.index, topk.log_rest) if topk is not None else (None, None, None)
    loss, ce, kd = _ChunkedLoss.apply(hidden, w, b, teacher_hidden, tw, labels, *tk, cfg, vocab, norm, chunk)
    return LossParts(loss, ce, kd, n)
