"""Training checkpoints: atomic, last-K, complete enough to resume bit for bit.

A checkpoint is a directory ``<out>/checkpoints/step-00000100/`` holding

* ``model.safetensors``: the trained module's full state (weights only);
* ``optimizer.pt``: the optimizer state keyed by parameter name (read with ``weights_only=True``);
* ``ranks.pt``: per process, the data loader cursor and every RNG state (torch, CUDA, numpy, random);
* ``trainer.json``: step, token and FLOP counters, elapsed time and the run's configuration.

It is written to a temporary sibling, every file and the directory are fsynced, and only then is it
renamed into place, so a crash or a full disk leaves the previous checkpoints untouched. A resume
from a checkpoint whose configuration differs from the current one is refused, naming the keys.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from headstart.errors import CheckpointError, DiskFullError
from headstart.io import atomic_dir

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    path: Path
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    ranks: list[dict[str, Any]]
    trainer: dict[str, Any]

    @property
    def step(self) -> int:
        """Optimizer steps completed when it was written."""
        return int(self.trainer["step"])


def rng_state() -> dict[str, Any]:
    """Every random generator's state, in types that ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints under ``out_dir``, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resumable(out_dir: str | os.PathLike[str], resume: bool) -> Path | None:
    """The checkpoint to resume from (``resume``), or ``None`` for a fresh run; refuses a fresh run
    over existing checkpoints and ``--resume`` without one. Reads only, so a refusal changes nothing."""
    path = latest_checkpoint(out_dir)
    if resume and path is None:
        raise CheckpointError(f"--resume: no checkpoint under {Path(out_dir) / 'checkpoints'}; start without --resume")
    if not resume and path is not None:
        raise CheckpointError(f"{out_dir} already holds checkpoints; pass --resume or choose another --out")
    return path


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing storage (tied embeddings): give each key its own copy."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, t in state.items():
        t = t.detach()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        out[key] = t.clone().contiguous() if ident in seen else t.contiguous()
        seen.add(ident)
    return out


def save_checkpoint(out_dir: str | os.PathLike[str], step: int, *, model: dict[str, torch.Tensor],
                    optimizer: dict[str, Any], ranks: list[dict[str, Any]], trainer: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and keep only the newest ``keep``; return its path.

    Raises :class:`CheckpointError` when the disk refuses (full, read-only); nothing partial is
    left behind and older checkpoints are untouched.
    """
    root = Path(out_dir) / CHECKPOINTS
    final = root / f"step-{step:08d}"
    if final.exists():
        return final  # already saved at this step (e.g. a signal right after a periodic save)
    try:
        with atomic_dir(final) as tmp:
            save_file(_dedupe_shared(model), str(tmp / "model.safetensors"))
            torch.save(optimizer, tmp / "optimizer.pt")
            torch.save(ranks, tmp / "ranks.pt")
            (tmp / "trainer.json").write_text(json.dumps({**trainer, "step": step}, indent=1, default=str))
    except (OSError, DiskFullError) as exc:  # atomic_dir reports a full disk as DiskFullError
        prev = latest_checkpoint(out_dir)
        kept = f"the previous checkpoint {prev.name} is intact" if prev else "no earlier checkpoint exists"
        reason = "No space left on device" if isinstance(exc, DiskFullError) else exc.strerror or exc
        raise CheckpointError(
            f"could not write the checkpoint of step {step} ({reason}); {kept}; free disk space "
            "and --resume"
        ) from None
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", final)
    return final


def config_differences(saved: dict[str, Any], current: dict[str, Any], ignore: set[str]) -> list[str]:
    """Keys whose values differ between two configurations (``ignore``d keys aside)."""
    keys = (set(saved) | set(current)) - ignore
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def load_checkpoint(path: str | os.PathLike[str], config: dict[str, Any] | None = None,
                    ignore: set[str] | None = None) -> Checkpoint:
    """Read a checkpoint; with ``config``, refuse one written under a different configuration."""
    path = Path(path)
    try:
        trainer = json.loads((path / "trainer.json").read_text())
        model = load_file(str(path / "model.safetensors"))
        optimizer = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
        ranks = torch.load(path / "ranks.pt", weights_only=True, map_location="cpu")
    except (OSError, ValueError, SafetensorError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or incomplete ({str(exc).splitlines()[0]})") from None
    if config is not None:
        diff = config_differences(trainer.get("config", {}), config, ignore or set())
        if diff:
            shown = ", ".join(f"{k}: {trainer.get('config', {}).get(k)!r} -> {config.get(k)!r}" for k in diff[:4])
            raise CheckpointError(
                f"cannot resume from {path}: it was written with a different configuration ({shown}); "
                "use the original options or start a new --out"
            )
    return Checkpoint(path, model, optimizer, ranks, trainer)
