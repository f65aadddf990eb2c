"""Divergences between a teacher's and a student's next-token distributions: the textbook formulas.

``p = softmax(teacher_logits / T)`` and ``q = softmax(student_logits / T)``; each divergence is per row:

* ``forward``: KL(p || q) = sum_v p_v (log p_v - log q_v)
* ``reverse``: KL(q || p) = sum_v q_v (log q_v - log p_v)
* ``jsd``: generalised Jensen-Shannon, beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q

The teacher may also be a cached top-k (:class:`TopK`): its ``k`` largest log-probabilities at
T=1, their token ids and the log of the remaining probability mass. The divergence is then taken
over ``k + 1`` buckets (the ``k`` tokens and "everything else"), with the temperature applied to the
bucket distribution; when ``k`` equals the vocabulary this is exactly the full-vocabulary loss.
:mod:`headstart.training.kd_loss` builds the training loss on these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from headstart.errors import ConfigError

Tensor = torch.Tensor


@dataclass
class TopK:
    """A cached teacher: top-k log-probabilities at T=1, token ids, log of the remaining mass."""

    logp: Tensor  # [N, k] float (stored fp16)
    index: Tensor  # [N, k] integer token ids
    log_rest: Tensor  # [N] log(1 - sum exp(logp)), -inf when k covers the vocabulary



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


__all__ = ["TopK", "divergence", "divergence_from_logprobs", "forward_kl", "jsd", "reverse_kl", "topk_divergence"]
