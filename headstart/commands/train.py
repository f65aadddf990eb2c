"""``headstart train``: pretrain a student with cross-entropy and distillation from the teacher.

Single process: ``headstart train --teacher T --student S --data D --out O``; several processes:
``torchrun --nproc_per_node=N -m headstart train ...`` (DDP, or FSDP2 with ``--fsdp``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from headstart.commands.progress import Bars
from headstart.errors import ConfigError, DataError, Interrupted
from headstart.train.config import TrainConfig


def check_backends(cfg: TrainConfig) -> None:
    """Refuse --tensorboard/--wandb without their package before anything loads."""
    import importlib.util

    for flag, on, package in (("--tensorboard", cfg.tensorboard, "tensorboard"), ("--wandb", cfg.wandb, "wandb")):
        if on and importlib.util.find_spec(package) is None:
            raise ConfigError(f"{flag} needs the {package} package: pip install {package}")


def check(cfg: TrainConfig) -> None:
    """Output path, data, teacher cache, backends and window length, before any model loads."""
    from headstart import preflight
    from headstart.teacher import model_config
    from headstart.train.checkpoint import resumable

    check_backends(cfg)
    preflight.out_path(cfg.out)
    resumable(cfg.out, cfg.resume)
    preflight.data_dir(cfg.data)
    if cfg.teacher_cache and not (Path(cfg.teacher_cache) / "cache.json").is_file():
        raise DataError(f"--teacher-cache {cfg.teacher_cache} is not a teacher cache (no cache.json); "
                        "build it with `headstart cache-logits`")
    student = Path(cfg.student.removeprefix("random:")).expanduser()
    source = student if (student / "config.json").is_file() else cfg.teacher
    if source:
        preflight.seq_len(model_config(source), cfg.seq_len, "the student")


def run(cfg: TrainConfig, teacher: Any = None) -> Path:
    """Train and export the student (every rank under torchrun); returns the run directory.

    ``teacher`` may pass the already loaded teacher of ``cfg.teacher`` (the pipeline loads it once).
    Raises :class:`Interrupted` when a signal stopped the run after its checkpoint.
    """
    from headstart import parallel
    from headstart.train.build import run as train_run

    check(cfg)
    started = parallel.init()
    try:
        with Bars(cfg.progress) as progress:
            result = train_run(cfg, teacher=teacher, progress=progress)
        parallel.barrier()  # every rank done (rank 0 exports) before the group goes down
    finally:
        if started:
            parallel.destroy()
    if result.get("interrupted"):
        raise Interrupted(f"stopped at step {result['step']}; continue with the same command and --resume")
    return Path(cfg.out)


def summary(out: Path, cfg: TrainConfig) -> str:
    """One JSON line: where the student is, steps, tokens and the final losses."""
    from headstart.train.build import SUMMARY

    data = json.loads((out / "student" / SUMMARY).read_text())
    final = {k: round(v, 4) for k, v in (data.get("final") or {}).items()}
    return json.dumps({"student": str(out / "student"), "steps": data["steps"], "tokens": data["tokens"], **final})
