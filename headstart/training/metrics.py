"""Training metrics: JSONL and CSV always, TensorBoard and Weights & Biases when installed and asked.

One :class:`MetricsLogger` on rank 0; other ranks get a null logger, so the loop never branches.
A run starts by cutting both files back to the step it starts from (a fresh run: empty), so a rerun
after a kill never repeats steps, and a line torn by a kill mid-write is dropped, never fatal.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

from headstart import io
from headstart.errors import ConfigError

log = logging.getLogger(__name__)

COLUMNS = ("step", "tokens", "teacher_tokens", "loss", "ce", "kd", "lr", "grad_norm", "tokens_per_s",
           "student_flops", "teacher_flops", "val_loss", "val_ppl", "elapsed_s")


class MetricsLogger:
    """Appends one row per call to ``metrics.jsonl`` and ``metrics.csv`` in ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike[str], *, enabled: bool = True, tensorboard: bool = False,
                 wandb: str | None = None, config: dict[str, Any] | None = None, start_step: int = 0):
        self.enabled = enabled
        self.out = Path(out_dir)
        self._tb = self._wandb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self._truncate(start_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self._tb = SummaryWriter(str(self.out / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_mod
            except ImportError:
                raise ConfigError("--wandb needs the wandb package: pip install wandb") from None
            self._wandb = wandb_mod.init(project=wandb, config=config or {}, dir=str(self.out))

    def _truncate(self, step: int) -> None:
        """Keep only the rows up to ``step`` (the checkpoint this run starts from; 0: none), dropping
        what an interrupted run logged after it and any torn line."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            (self.out / "metrics.csv").unlink(missing_ok=True)
            return
        rows = [r for r in io.read_jsonl(path) if 0 < int(r.get("step", 0)) <= step]
        io.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        with io.atomic_file(self.out / "metrics.csv") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def log(self, row: dict[str, Any]) -> None:
        """Record one row (keys outside :data:`COLUMNS` go to JSONL and the optional backends only)."""
        if not self.enabled:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        path = self.out / "metrics.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        step = int(row.get("step", 0))
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        """Flush and close the optional backends."""
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
