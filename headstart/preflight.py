"""Checks that run before any model loads, so a bad path, device or length fails in a second, not after minutes.

Each command calls the ones it needs at the top of its ``run``; every failure is one line naming
the flag.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from headstart.errors import CheckpointError, ConfigError


def out_path(path: str | os.PathLike[str], flag: str = "--out", exist_ok: bool = True) -> Path:
    """``path`` as an output directory: not a file, no file among its parents (and absent unless ``exist_ok``)."""
    p = Path(path)
    if p.is_file():
        raise ConfigError(f"{flag} {p} is a file; give a directory path")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{flag} {p}: {parent} is a file; give a path inside a directory")
    if not exist_ok and p.exists():
        raise CheckpointError(f"{p} already exists; choose another {flag} or remove it")
    return p


def device(name: str, flag: str = "--device") -> None:
    """Refuse a CUDA device on a machine without one (``auto`` and ``cpu`` always pass)."""
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} {name}: this machine has no CUDA device; use --device cpu or auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{flag} {name}: only {torch.cuda.device_count()} CUDA device(s) here")


def seq_len(config: Any, length: int, what: str, flag: str = "--seq-len") -> None:
    """Refuse windows longer than the model's positions (``max_position_embeddings``)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and length > int(limit):
        raise ConfigError(f"{flag} {length} is longer than {what}'s max_position_embeddings ({limit}); "
                          f"use at most {limit}")


def data_dir(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a prepared directory (every split present), read before any model loads."""
    from headstart.data import read_manifest

    return read_manifest(path)
