"""Distillation over a kept vocabulary, and the embedding and head cut to it.

The student predicts only the kept tokens, so its target is the teacher's distribution *renormalised*
over them: ``log_softmax(teacher_logits[..., kept] / T)``, which is what the teacher's head cut to the
kept rows (:func:`slice_rows`) gives directly. A cached top-k teacher drops its entries of dropped ids
and maps the others to new ids (:func:`kept_topk`).

Renormalising spreads the mass of a dropped token over all kept ones. :func:`folded_log_probs` instead
gives it to the first piece the student's tokenizer spells that token with (``Ġoutrageous`` -> ``Ġout``),
which is the student token the same text would start with (:func:`fold_map`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from headstart.training.kd_loss import TopK
from headstart.vocab.bpe import VocabError
from headstart.vocab.order import KeptVocab

Tensor = torch.Tensor


def _as_index(kept: Tensor, device: torch.device) -> Tensor:
    kept = torch.as_tensor(kept, dtype=torch.long, device=device)
    if kept.dim() != 1:
        raise VocabError(f"kept ids must be one list of teacher ids, got shape {tuple(kept.shape)}")
    return kept


def kept_log_probs(teacher_logits: Tensor, kept: Tensor, temperature: float = 1.0) -> Tensor:
    """``[..., V]`` teacher log-probabilities over the kept ids, renormalised, in new-id order.

    ``teacher_logits`` is ``[..., V_teacher]`` (a padded tail of extra rows is fine); ``kept[i]`` is the
    teacher id of new id ``i``.
    """
    if not temperature > 0:
        raise VocabError(f"temperature {temperature} must be positive")
    index = _as_index(kept, teacher_logits.device)
    if len(index) and int(index.max()) >= teacher_logits.shape[-1]:
        raise VocabError(f"kept id {int(index.max())} is beyond the teacher's {teacher_logits.shape[-1]} logits")
    return F.log_softmax(teacher_logits.float().index_select(-1, index) / temperature, dim=-1)


def kept_topk(topk: TopK, id_map: Tensor) -> tuple[TopK, Tensor]:
    """A cached top-k teacher over the kept vocabulary, and ``valid`` (``bool[N, k]``) of its entries.

    Entries of dropped ids are removed: their log-prob becomes ``-inf`` (their index repeats the row's
    best kept entry, so every index is a legal new id); the others are mapped to new ids by ``id_map``
    (``int64[V_teacher]``, ``-1`` for dropped) and, with the remaining mass (assumed kept: the cache cannot
    tell which tokens it holds), renormalised to sum to 1. A forward KL over these ``k + 1`` buckets equals
    the one with the dropped entries left out; reverse KL and JSD must skip entries where ``valid`` is False.
    """
    id_map = torch.as_tensor(id_map, dtype=torch.long, device=topk.index.device)
    index = topk.index.long()
    if index.numel() and int(index.max()) >= len(id_map):
        raise VocabError(f"cached token id {int(index.max())} is beyond the kept vocabulary's teacher of "
                         f"{len(id_map)} ids; the cache belongs to another teacher")
    new = id_map[index]
    valid = new >= 0
    logp = topk.logp.float().masked_fill(~valid, float("-inf"))
    fill = new.gather(-1, logp.argmax(-1, keepdim=True)).clamp_min(0)  # 0 only when a row keeps no entry
    new = torch.where(valid, new, fill.expand_as(new))
    total = torch.logsumexp(torch.cat([logp, topk.log_rest.float().unsqueeze(-1)], dim=-1), dim=-1, keepdim=True)
    return TopK(logp - total, new, topk.log_rest.float() - total.squeeze(-1)), valid


def fold_map(teacher_tokenizer: Any, kept: KeptVocab) -> np.ndarray:
    """``int64[teacher_size]``: each teacher id -> the new id of the first piece of its spelling in the
    student's vocabulary (a kept token is its own piece); ``-1`` for a dropped special token or an unnamed id."""
    from headstart.vocab.bpe import read_bpe
    from headstart.vocab.tokenizer import trim_tokenizer

    vocab = read_bpe(teacher_tokenizer)
    model = trim_tokenizer(teacher_tokenizer, kept).backend_tokenizer.model
    out = kept.id_map
    specials = {a.id for a in vocab.added if a.special}
    for i in np.flatnonzero(out < 0).tolist():
        if vocab.tokens[i] and i not in specials:
            out[i] = model.tokenize(vocab.tokens[i])[0].id
    return out


def folded_log_probs(teacher_logits: Tensor, fold: Tensor, size: int, temperature: float = 1.0) -> Tensor:
    """``[..., size]`` teacher log-probabilities with each token's mass moved to ``fold[token]`` (a new id; ``-1``:
    dropped, and the rest renormalised). ``fold`` is :func:`fold_map`; ``teacher_logits`` is ``[..., V_teacher]``."""
    if not temperature > 0:
        raise VocabError(f"temperature {temperature} must be positive")
    fold = torch.as_tensor(fold, dtype=torch.long, device=teacher_logits.device)
    n = min(len(fold), teacher_logits.shape[-1])  # a padded tail of logits names no token
    valid = torch.nonzero(fold[:n] >= 0).squeeze(-1)
    p = torch.softmax(teacher_logits[..., :n].float() / temperature, dim=-1).index_select(-1, valid)
    out = p.new_zeros(*p.shape[:-1], size).index_add_(-1, fold[valid], p)
    return torch.log(out / out.sum(-1, keepdim=True))


def slice_rows(weight: Tensor, kept: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """The rows ``kept`` of an embedding matrix or output head ``[V_teacher, H]`` (and of its bias)."""
    index = _as_index(kept, weight.device)
    if len(index) and int(index.max()) >= weight.shape[0]:
        raise VocabError(f"kept id {int(index.max())} is beyond the matrix's {weight.shape[0]} rows")
    return weight.index_select(0, index), (None if bias is None else bias.index_select(0, index))


def slice_embeddings(embed: Tensor, head: Tensor | None, kept: Tensor,
                     head_bias: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Embedding and output head cut to the kept rows, in new-id order.

    ``head`` is ``None`` or the embedding itself for tied weights: the result is then one tensor returned
    twice (tied stays tied). Returns ``(embed, head, head_bias)``.
    """
    new_embed, _ = slice_rows(embed, kept)
    if head is None or head is embed:
        return new_embed, (None if head is None else new_embed), None
    new_head, new_bias = slice_rows(head, kept, head_bias)
    return new_embed, new_head, new_bias
