"""From options to a run: the student, the teacher, the data and its guards, and the final export.

``--student`` is an exported directory, a spec file of the teacher (extracted on the fly), or
``random:<spec file or directory>``, the same architecture re-initialised with the family's own
init (the paper's baseline). :func:`run` ties everything to a :class:`~headstart.train.loop.Trainer`
and exports the trained student as a standard Hugging Face checkpoint with ``training_summary.json``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from headstart import parallel
from headstart.errors import ConfigError, TeacherError
from headstart.io import atomic_dir, write_json, write_yaml
from headstart.models import get_adapter
from headstart.precision import compute_dtype
from headstart.progress import Progress
from headstart.spec import SubnetSpec
from headstart.train.config import TrainConfig

log = logging.getLogger(__name__)

SUMMARY = "training_summary.json"


def _is_spec_file(path: Path) -> bool:
    return path.is_file() and path.suffix in (".yaml", ".yml", ".json")


def load_student(source: str, teacher: Any, seed: int) -> tuple[PreTrainedModel, Any]:
    """The student model (fp32, its own storage) and its tokenizer (``None`` if it ships none)."""
    random_init = source.startswith("random:")
    path = Path(source.removeprefix("random:")).expanduser()
    tokenizer = None
    if path.is_dir() and (path / "config.json").is_file():
        from headstart.teacher import load_model, load_tokenizer, model_config

        tokenizer = load_tokenizer(path)
        if not random_init:
            return load_model(path), tokenizer
        config = model_config(path)
    elif _is_spec_file(path):
        if teacher is None:
            raise ConfigError(f"--student {source} is a spec of a teacher; pass that --teacher too")
        spec = SubnetSpec.load(path)
        if not random_init:
            from headstart.extract import build_student

            student = build_student(teacher, spec).float()
            for t in list(student.parameters()) + list(student.buffers()):
                t.data = t.data.clone()  # never train in the teacher's storage
            return student, teacher.tokenizer
        config = teacher.adapter.student_config(spec)
    else:
        raise ConfigError(
            f"--student {source}: expected an exported checkpoint directory, a spec file (.yaml/.json) "
            "or random:<either>"
        )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return student, tokenizer or (teacher.tokenizer if teacher is not None else None)


def student_spec(source: str) -> SubnetSpec | None:
    """The spec ``--student`` was cut with (a spec file, or an export's ``headstart_spec.yaml``), if any."""
    from headstart.extract import SPEC_FILE

    path = Path(source.removeprefix("random:")).expanduser()
    if _is_spec_file(path):
        return SubnetSpec.load(path)
    if (path / SPEC_FILE).is_file():
        return SubnetSpec.load(path / SPEC_FILE)
    return None


def hidden_targets(cfg: TrainConfig, teacher: Any) -> Any:
    """The :class:`~headstart.train.hidden_loss.HiddenMap` of ``--hidden-weight`` (``None`` when it is 0)."""
    from headstart.train.hidden_loss import hidden_map

    if cfg.hidden_weight <= 0:
        return None
    spec = student_spec(cfg.student)
    if spec is None or teacher is None:
        raise ConfigError(f"--hidden-weight needs a student cut from --teacher (a spec file or an extracted "
                          f"checkpoint with its spec); {cfg.student} has no spec")
    teacher.adapter.validate(spec)
    return hidden_map(spec, cfg.hidden_layers)


def check_data(cfg: TrainConfig, teacher: Any, student: PreTrainedModel, student_tokenizer: Any) -> dict[str, Any]:
    """The data manifest, after the tokenizer and vocabulary guards; refuses another tokenizer's data."""
    from headstart.data import check_tokenizer, check_vocab, read_manifest

    manifest = read_manifest(cfg.data)
    for tok in (teacher.tokenizer if teacher is not None else None, student_tokenizer):
        if tok is not None:
            check_tokenizer(cfg.data, tok)
    vocab = int(manifest["vocab_size"])
    check_vocab(student.config.vocab_size, vocab)
    if teacher is not None:
        check_vocab(teacher.model.config.vocab_size, vocab)
    return manifest


def write_config(cfg: TrainConfig) -> Path:
    """The resolved configuration, beside the outputs, as ``config.yaml`` (atomically)."""
    return write_yaml(Path(cfg.out) / "config.yaml", cfg.to_dict())


def export_trained(trainer: Any, tokenizer: Any, out_dir: Path, summary: dict[str, Any]) -> Path | None:
    """Write the trained student as a Hugging Face checkpoint with ``training_summary.json``.

    Collective (every rank calls it); rank 0 writes to a temporary sibling, reloads it and compares its
    logits with the trained student (:func:`headstart.extract.verify_export`), then swaps it into place.
    """
    module = parallel.unwrap(trainer.model)
    if trainer.cfg.fsdp and parallel.is_distributed():
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
    from headstart.extract import verify_export

    was_training = student.training
    student.eval()
    try:
        with atomic_dir(out_dir, replace=True) as tmp:
            parallel.save_pretrained(student, tmp)  # also from a solo rank (a search rung)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            write_json(tmp / SUMMARY, summary, default=str)
            verify_export(student, tmp)
    finally:
        student.train(was_training)
    log.info("exported the trained student to %s", out_dir)
    return out_dir


def _flops(model: PreTrainedModel | None, seq_len: int) -> int:
    if model is None:
        return 0
    try:
        return get_adapter(model.config).counts(None, seq_len).flops_per_token
    except TeacherError:  # an architecture without an adapter: 2 FLOPs per parameter
        return 2 * sum(p.numel() for p in model.parameters())


def run(cfg: TrainConfig, teacher: Any = None, progress: Progress | None = None) -> dict[str, Any]:
    """Train per ``cfg`` (single process, or every rank under torchrun) and export the student.

    ``teacher`` may pass the already loaded teacher of ``cfg.teacher`` (the pipeline loads it once);
    ``progress`` receives the steps (:mod:`headstart.progress`).
    """
    from headstart.data import WindowLoader, fixed_windows
    from headstart.teacher import load_teacher
    from headstart.train.loop import Trainer
    from headstart.train.teacher_cache import TeacherCache

    kd = cfg.kd_config()
    need_teacher = (cfg.uses_teacher and not cfg.teacher_cache) or _is_spec_file(
        Path(cfg.student.removeprefix("random:")).expanduser())
    if need_teacher and not cfg.teacher:
        raise ConfigError("--teacher is needed (online distillation, or a student given as a spec of it)")
    owned = teacher is None or not need_teacher  # a teacher passed in is the caller's: never cast it
    if owned:
        teacher = load_teacher(cfg.teacher) if cfg.teacher and need_teacher else None
    student, student_tok = load_student(cfg.student, teacher, cfg.seed)
    manifest = check_data(cfg, teacher, student, student_tok)
    vocab = int(manifest["vocab_size"])
    cache = None
    if kd.uses_teacher and cfg.teacher_cache:
        cache = TeacherCache(cfg.teacher_cache)
        cache.check(seq_len=cfg.seq_len, vocab=vocab, data_fingerprint=manifest.get("key"),
                    teacher_fingerprint=teacher.fingerprint if teacher is not None else None)
    online = teacher.model if teacher is not None and cfg.uses_teacher and cache is None else None
    half = compute_dtype(cfg.dtype, parallel.device())
    if online is not None and owned and half is not None:
        online.to(half)  # no gradients: the teacher runs in half precision
    loader = WindowLoader(cfg.data, "train", cfg.seq_len, cfg.batch_size, seed=cfg.seed, rank=parallel.rank(),
                          world_size=parallel.world_size())
    val = None
    if cfg.eval_windows:
        val = fixed_windows(cfg.data, "val", cfg.seq_len, cfg.eval_windows, seed=cfg.val_seed())
    flops = {"student": _flops(student, cfg.seq_len), "teacher": _flops(online, cfg.seq_len)}
    trainer = Trainer(cfg, student, loader, val_windows=val, vocab=vocab, teacher=online, cache=cache, flops=flops,
                      hidden=hidden_targets(cfg, teacher), progress=progress)
    trainer.start()  # refuses (or resumes) before config.yaml is written
    if parallel.is_main():
        write_config(cfg)
    result = trainer.fit()
    if result["interrupted"]:
        return result
    summary = {
        "student": cfg.student, "teacher": cfg.teacher,
        "teacher_fingerprint": teacher.fingerprint if teacher is not None else (cache.meta.get("teacher_fingerprint")
                                                                                if cache else None),
        "teacher_cache": cfg.teacher_cache, "data": cfg.data, "data_key": manifest.get("key"),
        "params": sum(p.numel() for p in student.parameters()),
        "steps": result["step"], "tokens": result["tokens"], "teacher_tokens": result["teacher_tokens"],
        "target_step": result["target_step"],  # where --target-loss stopped the run (None: the full budget)
        "student_train_flops": 3 * flops["student"] * result["tokens"],
        "teacher_flops": flops["teacher"] * result["teacher_tokens"],
        "cache_teacher_tokens": int(cache.meta.get("windows", 0)) * cfg.seq_len if cache else 0,
        "elapsed_s": result["elapsed_s"], "final": result["last"], "config": cfg.to_dict(),
    }
    tokenizer = student_tok or (teacher.tokenizer if teacher is not None else None)
    export_trained(trainer, tokenizer, Path(cfg.out) / "student", summary)
    return {**result, "student_dir": str(Path(cfg.out) / "student")}
