"""The train stage: :func:`check` refuses bad paths and options before anything loads; :func:`run` trains the
student (single process, or every rank under torchrun) and exports it as a Hugging Face checkpoint.

Several processes: ``torchrun --nproc_per_node=N "$(which headstart)" train ...`` (DDP, or FSDP2 with
``runtime.fsdp``).
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from headstart import parallel, preflight
from headstart.config.train import LoggingConfig, TrainConfig, TrainPaths
from headstart.errors import ConfigError, DataError, Interrupted, TeacherError
from headstart.io import write_yaml
from headstart.locking import main_process_lock
from headstart.models import get_adapter
from headstart.precision import compute_dtype
from headstart.progress import Progress
from headstart.training.export import SUMMARY, export_trained, retain_checkpoints
from headstart.training.student import hidden_targets, is_spec_file, load_student


@dataclass
class TrainResult:
    """A finished run: its directory, the exported student and its ``training_summary.json``."""

    out: Path
    student_dir: Path
    summary: dict[str, Any]


def check_backends(logging: LoggingConfig) -> None:
    """Refuse TensorBoard/W&B logging without their package before anything loads."""
    for flag, on, package in (("logging.tensorboard", logging.tensorboard, "tensorboard"),
                              ("logging.wandb", logging.wandb, "wandb")):
        if on and importlib.util.find_spec(package) is None:
            raise ConfigError(f"{flag} needs the {package} package: pip install {package}")
    if logging.wandb and not wandb_credentials():
        raise ConfigError("logging.wandb: no W&B login found; run `wandb login`, set WANDB_API_KEY, or set "
                          "WANDB_MODE=offline")


def wandb_credentials() -> bool:
    """Whether W&B can start without asking: offline/disabled mode, an API key or identity token in the
    environment, or a login in the netrc file (``wandb login`` writes it)."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        return bool(netrc.netrc(os.environ.get("NETRC")).hosts)
    except (OSError, netrc.NetrcParseError):
        return False


def check(paths: TrainPaths, cfg: TrainConfig) -> None:
    """Paths, teacher needs, backends and window length, before any model loads."""
    from headstart.teacher import model_config
    from headstart.training.checkpoint import resumable

    check_backends(cfg.logging)
    student = Path(paths.student.removeprefix("random:")).expanduser()
    if cfg.uses_teacher and not (paths.teacher or paths.teacher_cache):
        raise ConfigError(f"kd.kind {cfg.kd.kind} needs --teacher or --teacher-cache; use --kd.kind none for CE only")
    if cfg.hidden.weight > 0 and (paths.teacher_cache or not paths.teacher):
        raise ConfigError("hidden.weight needs the teacher online: pass --teacher (not --teacher-cache)")
    if is_spec_file(student) and not paths.teacher:
        raise ConfigError(f"--student {paths.student} is a spec of a teacher; pass that --teacher too")
    preflight.out_path(paths.out)
    resumable(paths.out, paths.resume)
    preflight.data_dir(paths.data)
    if paths.teacher_cache and not (Path(paths.teacher_cache) / "cache.json").is_file():
        raise DataError(f"--teacher-cache {paths.teacher_cache} is not a teacher cache (no cache.json); build it "
                        "with `headstart cache-logits`")
    source = student if (student / "config.json").is_file() else paths.teacher
    if source:
        preflight.seq_len(model_config(source), cfg.seq_len, "the student")


def run(paths: TrainPaths, cfg: TrainConfig, teacher: Any = None, progress: Progress | None = None) -> TrainResult:
    """Train and export the student (every rank under torchrun).

    ``teacher`` may pass the already loaded teacher of ``paths.teacher`` (the pipeline loads it once);
    ``progress`` hears of every step. Raises :class:`Interrupted` when a signal stopped the run after its
    checkpoint.
    """
    check(paths, cfg)
    started = not parallel.is_distributed() and parallel.init()  # a caller's group stays up
    try:
        with main_process_lock(paths.out):  # one writer per run directory
            result = _train(paths, cfg, teacher, progress)
        parallel.barrier()  # every rank done (rank 0 exports) before the group goes down
    finally:
        if started:
            parallel.destroy()
    if result.get("interrupted"):
        raise Interrupted(f"stopped at step {result['step']}; continue with the same command and --resume")
    student_dir = Path(paths.out) / "student"
    summary = result["summary"]
    return TrainResult(Path(paths.out), student_dir, summary)


def check_data(data: str, teacher: Any, student: PreTrainedModel, student_tokenizer: Any) -> dict[str, Any]:
    """The data manifest, after the tokenizer and vocabulary guards; refuses another tokenizer's data."""
    from headstart.data import check_tokenizer, check_vocab, read_manifest

    manifest = read_manifest(data)
    for tok in (teacher.tokenizer if teacher is not None else None, student_tokenizer):
        if tok is not None:
            check_tokenizer(data, tok)
    vocab = int(manifest["vocab_size"])
    check_vocab(student.config.vocab_size, vocab)
    if teacher is not None:
        check_vocab(teacher.model.config.vocab_size, vocab)
    return manifest


def _flops(model: PreTrainedModel | None, seq_len: int) -> int:
    if model is None:
        return 0
    try:
        return get_adapter(model.config).counts(None, seq_len).flops_per_token
    except TeacherError:  # an architecture without an adapter: 2 FLOPs per parameter
        return 2 * sum(p.numel() for p in model.parameters())


def _teacher(paths: TrainPaths, cfg: TrainConfig, teacher: Any) -> tuple[Any, bool]:
    """The teacher this run needs (``None`` when it needs none) and whether this run owns it (may cast it)."""
    from headstart.teacher import load_teacher

    need = (cfg.uses_teacher and not paths.teacher_cache) or is_spec_file(
        Path(paths.student.removeprefix("random:")).expanduser())
    if teacher is not None and need:
        return teacher, False  # a teacher passed in is the caller's: never cast it
    return (load_teacher(paths.teacher) if need else None), True


def _train(paths: TrainPaths, cfg: TrainConfig, teacher: Any, progress: Progress | None) -> dict[str, Any]:
    from headstart.data import WindowLoader, fixed_windows
    from headstart.training.loop import Trainer
    from headstart.training.teacher_cache import TeacherCache

    teacher, owned = _teacher(paths, cfg, teacher)
    student, student_tok = load_student(paths.student, teacher, cfg.seed)
    manifest = check_data(paths.data, teacher, student, student_tok)
    vocab = int(manifest["vocab_size"])
    cache = None
    if cfg.kd.uses_teacher and paths.teacher_cache:
        cache = TeacherCache(paths.teacher_cache)
        cache.check(seq_len=cfg.seq_len, vocab=vocab, data_fingerprint=manifest.get("key"),
                    teacher_fingerprint=teacher.fingerprint if teacher is not None else None)
    online = teacher.model if teacher is not None and cfg.uses_teacher and cache is None else None
    half = compute_dtype(cfg.runtime.dtype, parallel.device())
    if online is not None and owned and half is not None:
        online.to(half)  # no gradients: the teacher runs in half precision
    loader = WindowLoader(paths.data, "train", cfg.seq_len, cfg.batch_size, seed=cfg.seed, rank=parallel.rank(),
                          world_size=parallel.world_size())
    val = None
    if cfg.validation.windows:
        val = fixed_windows(paths.data, "val", cfg.seq_len, cfg.validation.windows, seed=cfg.val_seed())
    flops = {"student": _flops(student, cfg.seq_len), "teacher": _flops(online, cfg.seq_len)}
    trainer = Trainer(cfg, student, loader, out=paths.out, resume=paths.resume, val_windows=val, vocab=vocab,
                      teacher=online, cache=cache, flops=flops, hidden=hidden_targets(cfg.hidden, paths.student,
                                                                                       teacher), progress=progress)
    trainer.start()  # refuses (or resumes) before config.yaml is written
    if parallel.is_main():
        write_yaml(Path(paths.out) / "config.yaml", {"paths": paths.to_dict(), **cfg.to_dict()})
    result = trainer.fit()
    if result["interrupted"]:
        return result
    summary = {
        "student": paths.student, "teacher": paths.teacher,
        "teacher_fingerprint": teacher.fingerprint if teacher is not None else (cache.meta.get("teacher_fingerprint")
                                                                                if cache else None),
        "teacher_cache": paths.teacher_cache, "data": paths.data, "data_key": manifest.get("key"),
        "params": sum(p.numel() for p in student.parameters()),
        "steps": result["step"], "tokens": result["tokens"], "teacher_tokens": result["teacher_tokens"],
        "target_step": result["target_step"],  # where validation.target_loss stopped the run (None: the full budget)
        "student_train_flops": 3 * flops["student"] * result["tokens"],
        "teacher_flops": flops["teacher"] * result["teacher_tokens"],
        "cache_teacher_tokens": int(cache.meta.get("windows", 0)) * cfg.seq_len if cache else 0,
        "elapsed_s": result["elapsed_s"], "final": result["last"], "config": cfg.to_dict(),
    }
    tokenizer = student_tok or (teacher.tokenizer if teacher is not None else None)
    export_trained(trainer, tokenizer, Path(paths.out) / "student", summary)
    if parallel.is_main():
        retain_checkpoints(Path(paths.out), cfg.checkpoint.retain)
    return {**result, "summary": summary}


__all__ = ["SUMMARY", "TrainResult", "check", "run"]
