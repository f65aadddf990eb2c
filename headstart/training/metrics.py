"""Training metrics: JSONL and CSV always, TensorBoard and Weights & Biases when installed and asked.

One :class:`MetricsLogger` on rank 0; other ranks get a null logger, so the loop never branches.
A run starts by cutting both files back to the step it starts from (a fresh run: empty), so a rerun
after a kill never repeats steps, and a line torn by a kill mid-write is dropped, never fatal.

The backends plot against training tokens (TensorBoard's step is the token count; W&B's x-axis is
``tokens``, with ``train_flops`` logged beside it), so runs at different batch sizes line up. A W&B run
is named after its run directory (``<budget>/<run>`` in a recipe), grouped by ``logging.wandb_group``,
and a resumed run continues the same W&B run (its id is kept in ``wandb_id.txt``).
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
                 wandb: str | None = None, config: dict[str, Any] | None = None, start_step: int = 0,
                 name: str | None = None, group: str | None = None, axis: str = "tokens"):
        self.enabled = enabled
        self.out = Path(out_dir)
        self._tb = self._wandb = None
        self.axis = axis
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
            self._wandb = open_wandb(self.out, wandb, name or "/".join(self.out.resolve().parts[-2:]), group,
                                     config or {}, resume=start_step > 0, axis=axis)

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
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        if "student_flops" in row:
            scalars["train_flops"] = float(row["student_flops"]) + float(row.get("teacher_flops", 0))
        tokens = int(row.get("tokens", row.get("step", 0)))
        if self._tb is not None:
            for k, v in scalars.items():
                if k not in ("step", "tokens"):
                    self._tb.add_scalar(k, v, tokens)
        if self._wandb is not None:
            self._wandb.log(scalars)

    def backends(self, scalars: dict[str, float], x: int) -> None:
        """``scalars`` at ``x`` in the optional backends only (no JSONL/CSV row)."""
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, x)
        if self._wandb is not None:
            self._wandb.log({**scalars, self.axis: x})

    def close(self) -> None:
        """Flush and close the optional backends."""
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def open_wandb(out: Path, project: str, name: str, group: str | None, config: dict[str, Any], resume: bool,
               axis: str = "tokens") -> Any:
    """A W&B run for the run directory ``out`` plotted against ``axis``: a new one, or (``resume``) the one whose
    id ``out`` kept."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("logging.wandb needs the wandb package: pip install wandb") from None
    id_file = out / "wandb_id.txt"
    run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
    try:  # the mode is read here, not from a W&B session set up earlier in this process
        run = wandb.init(project=project, name=name, group=group, config=config, dir=str(out), id=run_id,
                         resume="allow" if run_id else None, mode=os.environ.get("WANDB_MODE") or None)
    except wandb.errors.UsageError as e:
        raise ConfigError(f"logging.wandb: W&B did not start ({e}); run `wandb login`, set WANDB_API_KEY, or "
                          "set WANDB_MODE=offline") from None
    run.define_metric(axis)
    run.define_metric("*", step_metric=axis)
    if run_id is None:
        io.write_text(id_file, run.id + "\n")
    return run


def log_search(out_dir: str | os.PathLike[str], journal: list[dict[str, Any]], rungs: list[dict[str, Any]], *,
               tensorboard: bool = False, wandb: str | None = None, group: str | None = None) -> None:
    """The search in the metrics backends (x-axis: evaluations): per run and bin, the best untrained loss after
    each evaluation, and each rung's losses after training (one point per candidate, best first)."""
    logger = MetricsLogger(out_dir, tensorboard=tensorboard, wandb=wandb, name="search", group=group,
                           axis="evaluation")
    best: dict[tuple[str, int], float] = {}
    count: dict[tuple[str, int], int] = {}
    for rec in journal:
        if "loss" not in rec or "run" not in rec:
            continue
        key = (str(rec["run"]), int(rec.get("bin", 0)))
        count[key] = count.get(key, 0) + 1
        best[key] = min(best.get(key, float("inf")), float(rec["loss"]))
        logger.backends({f"search/{key[0]}/bin{key[1]}/best_loss": best[key]}, count[key])
    for b in rungs:
        for rung in sorted({int(r["rung"]) for r in b.get("results", [])}):
            losses = sorted(float(r["loss"]) for r in b["results"] if int(r["rung"]) == rung)
            for i, loss in enumerate(losses, start=1):
                logger.backends({f"search/bin{b['bin']}/rung{rung}_loss": loss}, i)
    logger.close()
