"""Sharded training checkpoints with ``torch.distributed.checkpoint`` (DCP), for FSDP2 runs.

Every rank writes its own shards of the model and optimizer state (nothing is gathered to one
rank), so the checkpoint scales with the cluster. A checkpoint is a directory
``<out>/checkpoints/step-00000100/`` holding

* DCP's files: ``.metadata`` and one ``__<rank>_0.distcp`` per writing rank (keys ``model.*``
  and ``optimizer.*``, by parameter name, wrapper-free);
* ``ranks.pt``: per process, the data loader cursor and every RNG state (``weights_only``-safe);
* ``trainer.json``: counters, the configuration and ``"format": "dcp"``.

**Atomic at the directory level.** All ranks write into ``.tmp-step-…``; once every rank's shards
and DCP's metadata are on disk, rank 0 fsyncs and renames it to ``step-…``. A kill at any moment
leaves either the whole new checkpoint or none of it; stale temporary directories are ignored and
removed by the next save. With ``async_save`` the shards are copied to host memory and written by a
background thread while training continues; the rename happens when the write has finished (at the
next save or at :meth:`ShardedCheckpointer.wait`).

**Resharding.** DCP stores every tensor with its global shape and offsets, so a checkpoint written
by N processes loads into M (any sharding, or none); the trainer accepts that when the global batch
(``batch_size × world_size``) is unchanged, which keeps the data order and the loss identical.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from headstart import parallel
from headstart.errors import CheckpointError
from headstart.training.checkpoint import CHECKPOINTS, config_differences, list_checkpoints

log = logging.getLogger(__name__)

FORMAT = "dcp"
_TMP_PREFIX = ".tmp-"
# Keys that may differ between a sharded checkpoint and its resume: the process count and the
# per-process batch (their product, ``global_batch``, is still compared).
RESHARDABLE = {"world_size", "batch_size"}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether the checkpoint directory ``path`` was written by DCP."""
    return (Path(path) / ".metadata").is_file()


@dataclass
class _Pending:
    future: Future
    tmp: Path
    final: Path


@dataclass
class Restored:
    """What :meth:`ShardedCheckpointer.load` returns besides loading the tensors in place."""

    path: Path
    trainer: dict[str, Any]
    ranks: list[dict[str, Any]]


class ShardedCheckpointer:
    """Save and load FSDP2 (or single-process) training state as sharded, atomic DCP checkpoints.

    Collective: every rank constructs it and calls :meth:`save`, :meth:`wait` and :meth:`load`.
    ``keep`` newest complete checkpoints are kept; ``async_save`` overlaps the writing with training.
    """

    def __init__(self, out_dir: str | os.PathLike[str], keep: int = 2, async_save: bool = False):
        self.root = Path(out_dir) / CHECKPOINTS
        self.keep, self.async_save = keep, async_save
        self._pending: _Pending | None = None
        # Async writes run collectives from a background thread: give them their own gloo group so
        # they never interleave with the training's collectives.
        self._group = dist.new_group(backend="gloo") if async_save and parallel.is_distributed() else None

    @staticmethod
    def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, trainer: dict[str, Any],
             rank_state: dict[str, Any]) -> Path:
        """Write checkpoint ``step`` (every rank its shards); returns its final path.

        Synchronous saves are complete on return; asynchronous ones once :meth:`wait` or the next
        save returns. Raises :class:`CheckpointError` (on every rank) when the disk refuses.
        """
        self.wait()
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f"{_TMP_PREFIX}{final.name}"
        ranks = parallel.all_gather_object(rank_state)
        error = None
        if parallel.is_main():
            error = _guard(lambda: self._prepare(tmp, ranks, {**trainer, "step": step, "format": FORMAT}), step)
        _raise_any(error)
        state = self._state(model, optimizer)
        writer = dcp.FileSystemWriter(str(tmp))
        try:
            if self.async_save:
                fut = dcp.async_save(state, storage_writer=writer, process_group=self._group)
                self._pending = _Pending(fut, tmp, final)
                return final
            dcp.save(state, storage_writer=writer)
        except (OSError, dcp.CheckpointException) as exc:
            error = _message(step, exc, self.root.parent)
        _raise_any(error)
        self._commit(tmp, final)
        return final

    def _prepare(self, tmp: Path, ranks: list[dict[str, Any]], trainer: dict[str, Any]) -> None:
        """Rank 0: a fresh temporary directory holding the small files (the shards come next)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)  # an earlier save that was killed
        tmp.mkdir()
        torch.save(ranks, tmp / "ranks.pt")
        (tmp / "trainer.json").write_text(json.dumps(trainer, indent=1, default=str))

    def wait(self) -> None:
        """Finish a pending asynchronous save (collective; a no-op when none is pending)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        error = None
        try:
            pending.future.result()
        except (OSError, dcp.CheckpointException) as exc:
            error = _message(int(pending.final.name.split("-")[1]), exc, self.root.parent)
        errors = parallel.all_gather_object(error)
        _raise_any(next((e for e in errors if e), None))
        self._commit(pending.tmp, pending.final)

    def _commit(self, tmp: Path, final: Path) -> None:
        """Every rank's shards are on disk: rank 0 makes the checkpoint visible, then prunes old ones."""
        parallel.barrier()
        error = None
        if parallel.is_main():
            error = _guard(lambda: self._rename(tmp, final), int(final.name.split("-")[1]))
        _raise_any(error)
        log.info("saved sharded checkpoint %s", final)

    def _rename(self, tmp: Path, final: Path) -> None:
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        if final.exists():  # the same step saved twice (a stop signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(self.root)
        for old in list_checkpoints(self.root.parent)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer | None,
             config: dict[str, Any] | None = None, ignore: set[str] | None = None) -> Restored:
        """Load checkpoint ``path`` into ``model`` (and ``optimizer``), resharding to this run's layout.

        With ``config``, refuses a checkpoint written under a different configuration (the process
        count and per-process batch aside, as long as the global batch matches).
        """
        path = Path(path)
        trainer, ranks = read_meta(path)
        if config is not None:
            check_config(path, trainer.get("config", {}), config, (ignore or set()) | RESHARDABLE)
        state = {"model": get_model_state_dict(model)}
        if optimizer is not None:
            state["optimizer"] = get_optimizer_state_dict(model, optimizer)
        try:
            dcp.load(state, storage_reader=dcp.FileSystemReader(str(path)))
        except (OSError, RuntimeError, dcp.CheckpointException) as exc:
            raise CheckpointError(f"sharded checkpoint {path} is unreadable ({str(exc).splitlines()[0]})") from None
        set_model_state_dict(model, state["model"])
        if optimizer is not None:
            set_optimizer_state_dict(model, optimizer, state["optimizer"])
        return Restored(path, trainer, ranks)


def read_meta(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``trainer.json`` and ``ranks.pt`` of a sharded checkpoint."""
    try:
        trainer = json.loads((path / "trainer.json").read_text())
        ranks = torch.load(path / "ranks.pt", weights_only=True, map_location="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or incomplete ({str(exc).splitlines()[0]})") from None
    if trainer.get("format") != FORMAT or not is_sharded(path):
        raise CheckpointError(f"checkpoint {path} is not a sharded (DCP) checkpoint; resume it with the options "
                              "that wrote it (--fsdp writes and reads sharded checkpoints)")
    return trainer, ranks


def check_config(path: Path, saved: dict[str, Any], current: dict[str, Any], ignore: set[str]) -> None:
    """Refuse to resume under a configuration that changes what is trained."""
    diff = config_differences(saved, current, ignore)
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff[:4])
        raise CheckpointError(f"cannot resume from {path}: it was written with a different configuration ({shown}); "
                              "use the original options (any process count with the same global batch) or a new --out")


def rank_state_for(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """This process's saved loader/RNG state; after a reshard, the saved rank ``rank % saved``'s.

    The loader's position is global (the same on every rank), so it carries over to any process
    count; RNG streams only matter for random layers (dropout), which the students do not use.
    """
    if len(ranks) != parallel.world_size():
        log.info("resharding from %d to %d processes", len(ranks), parallel.world_size())
    return ranks[parallel.rank() % len(ranks)]


def load_student_weights(path: str | os.PathLike[str], student: nn.Module, prefix: str = "student.") -> nn.Module:
    """Fill a plain (unsharded) ``student`` with the trained weights of a sharded checkpoint, in one process.

    The checkpoint's keys are the trained module's (``prefix`` + the student's own names), so the
    result can be exported with ``save_pretrained`` without any process group.
    """
    path = Path(path)
    read_meta(path)
    state = {"model": {prefix + k: v for k, v in student.state_dict().items()}}
    try:
        dcp.load(state, storage_reader=dcp.FileSystemReader(str(path)), no_dist=True)
    except (OSError, RuntimeError, dcp.CheckpointException) as exc:
        raise CheckpointError(f"sharded checkpoint {path} is unreadable ({str(exc).splitlines()[0]})") from None
    student.load_state_dict({k.removeprefix(prefix): v for k, v in state["model"].items()})
    return student


def _message(step: int, exc: BaseException, out: Path) -> str:
    prev = list_checkpoints(out)
    kept = f"the previous checkpoint {prev[-1].name} is intact" if prev else "no earlier checkpoint exists"
    reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
    return f"could not write the sharded checkpoint of step {step} ({reason}); {kept}; free disk space and --resume"


def _guard(fn: Any, step: int) -> str | None:
    try:
        fn()
    except OSError as exc:
        return f"could not write the checkpoint of step {step} ({exc.strerror or exc}); free disk space and --resume"
    return None


def _raise_any(error: str | None) -> None:
    error = parallel.broadcast_object(error)
    if error:
        raise CheckpointError(error)
