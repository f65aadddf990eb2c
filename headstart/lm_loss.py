"""The one cross-entropy evaluator: next-token loss of a causal LM on fixed windows, head applied in chunks.

Search fitness, training validation, a run's starting point and ``headstart eval`` all score
through :func:`chunked_ce_sum`, so they agree to the last bit for the same model and dtype. The
family's adapter supplies the hidden states and the logits (soft-capping included where a family
has it); full ``[tokens, vocab]`` logits never exist at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from headstart.models import ModelAdapter, get_adapter

IGNORE_INDEX = -100
DEFAULT_CHUNK = 2048


@torch.no_grad()
def chunked_ce(logits_of: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor,
               chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """The float64 sum of CE of hidden states ``[N, H]`` against ``targets`` ``[N]`` (``-100`` ignored),
    the logits formed ``chunk`` tokens at a time; a tensor on ``hidden``'s device (no host sync)."""
    total = torch.zeros((), dtype=torch.float64, device=hidden.device)
    for i in range(0, targets.numel(), chunk):
        logits = logits_of(hidden[i:i + chunk]).float()
        total += F.cross_entropy(logits, targets[i:i + chunk], ignore_index=IGNORE_INDEX, reduction="sum").double()
    return total


def chunked_ce_sum(logits_of: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor,
                   chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, int]:
    """``(float64 sum of CE, counted tokens)``: :func:`chunked_ce` and the count of targets not ``-100``.

    ``logits_of`` is the family's logit transform (:meth:`~headstart.models.base.ModelAdapter.logits`,
    soft-capping included), so capped families score as their own forward does."""
    return chunked_ce(logits_of, hidden, targets, chunk), int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def sum_cross_entropy(model: nn.Module, windows: torch.Tensor, batch_size: int = 4,
                      autocast: torch.dtype | None = None, chunk: int = DEFAULT_CHUNK,
                      adapter: ModelAdapter | None = None) -> tuple[float, int]:
    """``(sum of next-token CE in nats, predicted tokens)`` of ``model`` on ``windows`` ``[n, seq_len + 1]``
    (inputs ``[:, :-1]``, targets ``[:, 1:]``), in ``autocast`` when given."""
    adapter = adapter or get_adapter(model.config)
    device = next(model.parameters()).device
    ctx = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size].to(device)
        with ctx:
            hidden = adapter.hidden_states(model, batch[:, :-1])
            s, n = chunked_ce_sum(lambda h: adapter.logits(model, h), hidden.flatten(0, 1), batch[:, 1:].reshape(-1),
                                  chunk)
        total += float(s)
        count += n
    return total, count
