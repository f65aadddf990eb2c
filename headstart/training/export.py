"""The trained student as a standard Hugging Face checkpoint, verified against the model in memory."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoModelForCausalLM

from headstart import parallel
from headstart.errors import CheckpointError, ConfigError
from headstart.io import atomic_dir, write_json
from headstart.progress import Progress, report

log = logging.getLogger(__name__)

SUMMARY = "training_summary.json"


def export_trained(trainer: Any, tokenizer: Any, out_dir: Path, summary: dict[str, Any]) -> Path | None:
    """Write the trained student as a Hugging Face checkpoint with ``training_summary.json``.

    Collective (every rank calls it); rank 0 writes to a temporary sibling, reloads it and compares its
    logits with the trained student (:func:`headstart.extraction.verify_export`), then swaps it into place.
    """
    module = parallel.unwrap(trainer.model)
    if trainer.cfg.runtime.fsdp and parallel.is_distributed():
        state = {k.removeprefix("student."): v for k, v in parallel.full_model_state(trainer.model).items()}
    else:
        state = None
    if not parallel.is_main():
        return None
    student = module.student
    if state is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            student = AutoModelForCausalLM.from_config(student.config, dtype=torch.float32)
        student.load_state_dict(state)
    write_student(student, tokenizer, out_dir, summary)
    log.info("exported the trained student to %s", out_dir)
    return out_dir


def write_student(student: torch.nn.Module, tokenizer: Any, out_dir: Path, summary: dict[str, Any],
                  replace: bool = True) -> Path:
    """``student`` (with ``tokenizer``, ``training_summary.json`` and the teacher's license files) as a Hugging
    Face directory, written to a temporary sibling, reloaded and compared with ``student``, then moved into place."""
    from headstart.extraction import copy_license, verify_export

    was_training = student.training
    student.eval()
    try:
        with atomic_dir(out_dir, replace=replace) as tmp:
            parallel.save_pretrained(student, tmp)  # also from a solo rank (a search rung)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            write_json(tmp / SUMMARY, summary, default=str)
            copy_license(summary.get("teacher"), tmp)
            verify_export(student, tmp)
    finally:
        student.train(was_training)
    return out_dir


def retain_checkpoints(out: Path, retain: str) -> None:
    """After the export, keep all checkpoints of the run (``all``), the newest (``last``) or none."""
    from headstart.training.checkpoint import list_checkpoints

    if retain == "all":
        return
    for old in list_checkpoints(out)[:-1] if retain == "last" else list_checkpoints(out):
        shutil.rmtree(old)


def run_export(paths: Any, cfg: Any, progress: Progress | None = None) -> Path:
    """The newest checkpoint of a training run (or the one of ``cfg.step``) as a loadable Hugging Face
    directory at ``paths.out``: the run's student architecture with the checkpoint's weights (plain or
    sharded), its tokenizer and a summary naming the checkpoint."""
    from headstart import preflight
    from headstart.training.checkpoint import list_checkpoints

    run = Path(paths.run)
    try:
        saved = yaml.safe_load((run / "config.yaml").read_text())["paths"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise CheckpointError(f"{run} is not a headstart train run (no readable config.yaml with its paths); pass "
                              "the --out of a headstart train run") from None
    preflight.out_path(paths.out, exist_ok=False)
    checkpoints = list_checkpoints(run)
    wanted = checkpoints[-1:] if cfg.step is None else [c for c in checkpoints if c.name == f"step-{cfg.step:08d}"]
    if not wanted:
        held = ", ".join(str(int(c.name.removeprefix("step-"))) for c in checkpoints) or "none"
        raise CheckpointError(f"{run} has no checkpoint{'' if cfg.step is None else f' of step {cfg.step}'} "
                              f"(steps held: {held}); export a held step, or rerun with checkpoint.retain all")
    report(progress, "export", 0, 1)
    student, tokenizer, teacher = _architecture(saved, paths.teacher)
    _load_weights(wanted[0], student)
    summary = {"run": str(run), "checkpoint": wanted[0].name, "step": int(wanted[0].name.removeprefix("step-")),
               "student": saved.get("student"), "teacher": teacher}
    out = write_student(student, tokenizer, Path(paths.out), summary, replace=False)
    report(progress, "export", 1, 1)
    log.info("exported %s of %s to %s", wanted[0].name, run, out)
    return out


def _architecture(saved: dict[str, Any], teacher_source: str | None) -> tuple[torch.nn.Module, Any, str | None]:
    """The run's student model (its weights to be replaced), its tokenizer and the teacher's source."""
    from headstart.training.student import is_spec_file, load_student

    source = str(saved.get("student"))
    teacher_source = teacher_source or saved.get("teacher")
    teacher = None
    if is_spec_file(Path(source.removeprefix("random:")).expanduser()):
        if not teacher_source:
            raise ConfigError(f"the run's student {source} is a spec of a teacher; pass --teacher")
        from headstart.teacher import load_teacher

        teacher = load_teacher(teacher_source)
    student, tokenizer = load_student(source, teacher, seed=0)
    return student, tokenizer, teacher_source


def _load_weights(path: Path, student: torch.nn.Module) -> None:
    """Fill ``student`` with the trained weights of checkpoint ``path``."""
    from headstart.training.checkpoint import load_checkpoint
    from headstart.training.dcp import is_sharded, load_student_weights

    if is_sharded(path):
        load_student_weights(path, student)
        return
    state = {k.removeprefix("student."): v for k, v in load_checkpoint(path).model.items()}
    try:
        student.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint {path} does not fit the run's student ({detail})") from None
