"""One module per subcommand: ``run(cfg) -> result`` does the work, ``summary(result, cfg) -> str`` says
what came out. ``headstart run`` chains the same ``run`` functions the subcommands call."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary sibling, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_config(cfg: Any, path: str | Path) -> Path:
    """The resolved config beside a command's outputs, as YAML (atomically)."""
    return write_text(path, yaml.safe_dump(asdict(cfg), sort_keys=False))
