"""Fitness: mean next-token cross-entropy of a sliced, untrained sub-network on fixed windows.

The sub-network is sliced from the teacher's state dict in memory (computed once), never written
to disk. Windows come from the prepared ``search`` split (never ``val``). Loss is computed with the
output head applied in chunks of tokens, so full ``[tokens, vocab]`` fp32 logits never exist at
once. Under ``torchrun`` every rank scores its share of the windows and the summed losses and token
counts are all-reduced, so N processes evaluate a candidate N times faster and agree on its loss.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from headstart import parallel
from headstart.errors import ConfigError, DataError
from headstart.extract import build_student
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher

log = logging.getLogger(__name__)

def autocast_dtype(device: torch.device, dtype: str | None) -> torch.dtype | None:
    """The autocast dtype of ``--dtype`` (:mod:`headstart.precision`; ``None``: float32 on CPU, auto on CUDA)."""
    from headstart.precision import compute_dtype

    return compute_dtype(dtype or ("auto" if device.type == "cuda" else "float32"), device)


@torch.no_grad()
def sum_cross_entropy(model: PreTrainedModel, windows: torch.Tensor, batch_size: int = 4,
                      autocast: torch.dtype | None = None, chunk: int = 2048) -> tuple[float, int]:
    """``(sum of next-token CE in nats, number of predicted tokens)`` of ``model`` on ``windows``
    (``[n, seq_len + 1]`` token ids: inputs are ``[:, :-1]``, targets ``[:, 1:]``)."""
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    ctx = (torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext())
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size].to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:].reshape(-1)
        with ctx:
            hidden = model.base_model(input_ids=inputs, use_cache=False).last_hidden_state
            hidden = hidden.reshape(-1, hidden.shape[-1])  # [B * S, H]
            for i in range(0, targets.numel(), chunk):
                logits = head(hidden[i:i + chunk]).float()  # [chunk, V]
                total += F.cross_entropy(logits, targets[i:i + chunk], reduction="sum").double().cpu()
        count += targets.numel()
    return float(total), count


class Fitness:
    """Callable ``spec -> mean CE`` over fixed windows, split across ranks under torchrun."""

    def __init__(self, teacher: Teacher, windows: torch.Tensor, batch_size: int = 4, dtype: str | None = None) -> None:
        if windows.ndim != 2 or windows.shape[0] < 1 or windows.shape[1] < 2:
            raise DataError(f"fitness needs [n >= 1, seq_len + 1 >= 2] windows, got {tuple(windows.shape)}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        vocab = teacher.dims.vocab_size
        if int(windows.max()) >= vocab or int(windows.min()) < 0:
            raise DataError(
                f"window token ids reach {int(windows.max())} but the teacher's vocabulary has {vocab}; "
                "prepare the data with the teacher's tokenizer"
            )
        self.teacher = teacher
        self.state = teacher.model.state_dict()
        self.batch_size = batch_size
        self.device = next(teacher.model.parameters()).device
        self.autocast = autocast_dtype(self.device, dtype)
        self.total_windows = windows.shape[0]
        self.windows = windows[parallel.rank()::parallel.world_size()].contiguous()  # this rank's share

    def __call__(self, spec: SubnetSpec) -> float:
        """Mean next-token CE (nats) of the sub-network ``spec`` over all ranks' windows."""
        s, n = 0.0, 0
        if self.windows.shape[0]:
            student = build_student(self.teacher, spec, state=self.state)
            s, n = sum_cross_entropy(student, self.windows, self.batch_size, self.autocast)
            del student
        sums = parallel.all_reduce_sum(torch.tensor([s, float(n)], dtype=torch.float64, device=self.device))
        return float(sums[0] / sums[1])
