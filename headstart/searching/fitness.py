"""Fitness: mean next-token cross-entropy of a sliced, untrained sub-network on fixed windows.

The sub-network is sliced from the teacher's state dict in memory (computed once), never written
to disk. Windows come from the prepared ``search`` split (never ``val``). Loss is computed with the
output head applied in chunks of tokens, so full ``[tokens, vocab]`` fp32 logits never exist at
once. A :class:`Fitness` scores a candidate on every window in this process, with no communication:
under ``torchrun`` the search hands *different* candidates to different ranks
(:func:`headstart.parallel.spread`, see :mod:`headstart.searching.evolve`), so N processes score a
generation of candidates up to N times faster, and each loss is computed exactly as one process
computes it (same windows, same batches, same order of sums).
"""

from __future__ import annotations

import logging
import math

import torch
from transformers import PreTrainedModel

from headstart.config.search import FitnessConfig
from headstart.errors import ConfigError, DataError
from headstart.extraction import build_student
from headstart.lm_loss import sum_cross_entropy
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher

log = logging.getLogger(__name__)

def autocast_dtype(device: torch.device, dtype: str | None) -> torch.dtype | None:
    """The autocast dtype of ``--dtype`` (:mod:`headstart.precision`; ``None``: float32 on CPU, auto on CUDA)."""
    from headstart.precision import compute_dtype

    return compute_dtype(dtype or ("auto" if device.type == "cuda" else "float32"), device)


class Fitness:
    """Callable ``spec -> mean CE`` over fixed windows, all of them scored in this process.

    Early abandonment (``screen``; off without it): given a ``threshold`` (the loss a candidate must
    beat to matter, e.g. the population's worst), the first ``screen.abandon_after`` fraction of the
    windows is scored first; a candidate whose partial mean exceeds ``threshold + screen.abandon_margin``
    stops there, its partial mean is its loss and :attr:`abandoned` is set.
    """

    def __init__(self, teacher: Teacher, windows: torch.Tensor, batch_size: int = 4, dtype: str | None = None,
                 screen: FitnessConfig | None = None) -> None:
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
        self.batch_size = batch_size
        self.device = next(teacher.model.parameters()).device
        low = autocast_dtype(self.device, dtype)
        # Low precision: the teacher's weights are cast once and candidates are sliced from that copy and
        # run natively in it (autocast would cast every weight again on every call, which costs as much
        # as it saves on a CPU). Norms and the loss still accumulate in float32.
        self.state = {k: v.to(low) if low is not None and v.is_floating_point() else v
                      for k, v in teacher.model.state_dict().items()}
        self.windows = windows
        screen = screen or FitnessConfig(abandon_after=0.0)
        self.head = math.ceil(screen.abandon_after * self.windows.shape[0]) if screen.abandon_after > 0 else 0
        self.abandon_margin = screen.abandon_margin
        self.abandoned = False
        self.tokens = 0  # tokens scored by the last call, for FLOP accounting

    @property
    def abandons(self) -> bool:
        """Whether a call with a threshold may stop early."""
        return self.head > 0

    def _sums(self, student: PreTrainedModel, windows: torch.Tensor) -> torch.Tensor:
        s, n = sum_cross_entropy(student, windows, self.batch_size, adapter=self.teacher.adapter)
        return torch.tensor([s, float(n)], dtype=torch.float64)

    def __call__(self, spec: SubnetSpec, threshold: float | None = None) -> float:
        """Mean next-token CE (nats) of the sub-network ``spec`` over the windows (or over the first part
        of them, when it is clearly worse than ``threshold``)."""
        student = build_student(self.teacher, spec, state=self.state, share=True)  # read only
        head = self.head if threshold is not None and math.isfinite(threshold) else 0
        sums = self._sums(student, self.windows[:head]) if head else torch.zeros(2, dtype=torch.float64)
        self.abandoned = bool(head) and float(sums[0] / sums[1]) > threshold + self.abandon_margin
        if not self.abandoned:
            sums = sums + self._sums(student, self.windows[head:])
        del student
        self.tokens = int(sums[1])
        return float(sums[0] / sums[1])
