"""Extraction: spec + teacher -> an in-memory student, and -> a standard Hugging Face checkpoint.

The extract stage is :func:`check` (before the teacher loads) and :func:`run` (``headstart extract``).

The exported directory (config, safetensors, tokenizer files, ``headstart_spec.yaml``) loads with
plain ``AutoModelForCausalLM.from_pretrained``; a layer-wise spec's also holds its modelling code
(:mod:`headstart.models.modeling_layerwise`, copied by ``save_pretrained``), which loads with
``trust_remote_code=True`` where headstart is absent. Every export reloads what it wrote and compares
the logits with the in-memory student; on mismatch it refuses to finish and leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import AutoModelForCausalLM, PreTrainedModel

from headstart.config.extract import ExtractConfig, ExtractPaths
from headstart.errors import CheckpointError, ConfigError
from headstart.io import atomic_dir, remove_stale_temps
from headstart.progress import Progress, report
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher

log = logging.getLogger(__name__)

SPEC_FILE = "headstart_spec.yaml"


def build_student(teacher: Teacher, spec: SubnetSpec, state: dict[str, torch.Tensor] | None = None,
                  share: bool = False) -> PreTrainedModel:
    """The sub-network ``spec`` of ``teacher`` as a model in memory (same dtype and device).

    Nothing touches the disk. ``state`` may pass a precomputed ``teacher.model.state_dict()`` so
    that many candidates can be sliced cheaply. The student owns its weights (training or refitting
    it never touches the teacher) unless ``share``: then a weight that ``spec`` keeps whole is the
    teacher's own tensor, which only a read-only user (search fitness) may ask for.
    """
    adapter = teacher.adapter
    config = adapter.student_config(spec)
    source = state if state is not None else teacher.model.state_dict()
    sliced = adapter.slice_state_dict(source, spec)
    if not share:
        owned = {t.untyped_storage().data_ptr() for t in source.values()}
        sliced = {k: t.clone(memory_format=torch.contiguous_format) if t.untyped_storage().data_ptr() in owned else t
                  for k, t in sliced.items()}
    param = next(teacher.model.parameters())
    with init_empty_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student = AutoModelForCausalLM.from_config(config, dtype=param.dtype)
    missing, unexpected = student.load_state_dict(sliced, strict=False, assign=True)
    if adapter.tied:
        student.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise CheckpointError(
            f"sliced weights do not fit the student: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    student.to(param.device)
    if getattr(student, "generation_config", None) is not None and teacher.model.generation_config is not None:
        student.generation_config = teacher.model.generation_config
    return student.eval()


def export(
    teacher: Teacher,
    spec: SubnetSpec,
    out_dir: str | os.PathLike[str],
    *,
    student: PreTrainedModel | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write the sub-network ``spec`` of ``teacher`` to ``out_dir`` as a Hugging Face checkpoint.

    ``out_dir`` must not exist. The checkpoint is written to a temporary sibling, reloaded with
    plain transformers, checked against the in-memory student's logits, then renamed into place.
    """
    out = Path(out_dir)
    if out.exists():
        raise CheckpointError(f"{out} already exists; choose another output directory or remove it")
    student = student if student is not None else build_student(teacher, spec)
    remove_stale_temps(out.parent, f".{out.name}.")
    with atomic_dir(out) as tmp:
        student.save_pretrained(tmp)
        if teacher.tokenizer is not None:
            teacher.tokenizer.save_pretrained(tmp)
        counts = teacher.adapter.counts(spec.shape)
        meta = {
            "teacher": teacher.source,
            "teacher_fingerprint": teacher.fingerprint,
            "params": counts.params,
            "non_embedding_params": counts.non_embedding_params,
            **(metadata or {}),
        }
        spec.save(tmp / SPEC_FILE, extra=meta)
        copy_license(teacher.source, tmp)
        verify_export(student, tmp)
    log.info("exported %s (%s params) to %s", spec.describe(), f"{counts.params:,}", out)
    return out


def verify_export(student: PreTrainedModel, path: str | os.PathLike[str], seq_len: int = 24) -> float:
    """Reload ``path`` with plain transformers and compare logits with ``student``.

    Returns the max abs difference; raises :class:`CheckpointError` above the dtype's tolerance.
    """
    param = next(student.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = AutoModelForCausalLM.from_pretrained(path, dtype=param.dtype, trust_remote_code=False)
    reloaded = reloaded.to(param.device).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, student.config.vocab_size, (2, seq_len), generator=gen).to(param.device)
    with torch.no_grad():
        a = student(input_ids=ids).logits.float()
        b = reloaded(input_ids=ids).logits.float()
    diff = float((a - b).abs().max())
    tol = 1e-4 if param.dtype == torch.float32 else 5e-2
    scale = max(1.0, float(a.abs().max()))
    if not diff <= tol * scale:
        raise CheckpointError(
            f"the exported checkpoint's logits differ from the in-memory sub-network by {diff:.3g} "
            f"(tolerance {tol * scale:.3g}); refusing to finish the export"
        )
    return diff


LICENSE_FILES = ("LICENSE*", "NOTICE*", "*TERMS*")


def copy_license(source: str | None, into: Path) -> list[Path]:
    """Copy the license files of a local teacher ``source`` (``LICENSE``, ``NOTICE``, the Gemma Terms of a builtin)
    into ``into``: a student cut from a teacher is a derivative of it and carries its terms."""
    import shutil

    from headstart.errors import HeadstartError
    from headstart.teacher import resolve_source

    try:
        folder = Path(resolve_source(source).path) if source else None
    except HeadstartError:  # an in-memory teacher, or one that is gone: nothing to copy
        return []
    if folder is None or not folder.is_dir():
        return []
    found = sorted({p for pattern in LICENSE_FILES for p in folder.glob(pattern) if p.is_file()})
    return [Path(shutil.copy2(p, into / p.name)) for p in found]


def load_spec_of(path: str | os.PathLike[str]) -> SubnetSpec:
    """The spec an exported checkpoint directory was cut with."""
    return SubnetSpec.load(Path(path) / SPEC_FILE)


def check(paths: ExtractPaths, cfg: ExtractConfig) -> None:
    """The output path, the spec or the sizes (against the teacher's config), before the teacher loads."""
    from headstart import preflight
    from headstart.models import get_adapter
    from headstart.selection import from_sizes
    from headstart.teacher import model_config

    preflight.out_path(paths.out, exist_ok=False)
    if paths.spec and any(v is not None for v in cfg.sizes().values()):
        raise ConfigError("give either --spec or plain sizes (--layers/--hidden/...), not both")
    adapter = get_adapter(model_config(paths.teacher))
    if paths.spec:
        adapter.validate(SubnetSpec.load(paths.spec))
    else:  # the sizes, in first-k order (importance picks other indices of the same sizes)
        adapter.validate(from_sizes(adapter.dims, layers=cfg.layer_choice(), hidden=cfg.hidden,
                                    kv_groups=cfg.kv_groups, heads_per_group=cfg.heads_per_group, mlp=cfg.mlp))


def run(paths: ExtractPaths, cfg: ExtractConfig, progress: Progress | None = None) -> Path:
    """Resolve the spec (file or sizes), cut it, reconstruct it if asked, export it; the checkpoint directory."""
    from headstart.teacher import load_teacher

    check(paths, cfg)
    report(progress, "load teacher", 0, 1)
    teacher = load_teacher(paths.teacher, dtype=cfg.weights_dtype)
    report(progress, "load teacher", 1, 1)
    spec = teacher.adapter.validate(SubnetSpec.load(paths.spec)) if paths.spec else spec_from_sizes(cfg, teacher,
                                                                                                  progress)
    meta = {"order": cfg.order if not paths.spec else "spec-file", "teacher_params": teacher.adapter.counts().params}
    student = None
    if cfg.reconstruct.enabled:
        from headstart.calibration import calibration_tokens
        from headstart.reconstruct import reconstruct

        tokens = calibration_tokens(cfg.calib, teacher.tokenizer, cfg.calib_samples, cfg.calib_seq_len, cfg.seed)
        student = build_student(teacher, spec)
        meta["reconstruction"] = reconstruct(teacher, spec, student, tokens, **cfg.reconstruct.arguments())
    report(progress, "export", 0, 1)
    out = export(teacher, spec, paths.out, student=student, metadata=meta)
    report(progress, "export", 1, 1)
    return out


def spec_from_sizes(cfg: ExtractConfig, teacher: Teacher, progress: Progress | None = None) -> SubnetSpec:
    """The spec of the plain sizes in ``cfg.order`` (importance from one calibration pass)."""
    from headstart.selection import from_sizes

    importance = None
    if cfg.order == "importance":
        from headstart.calibration import calibration_tokens
        from headstart.importance import load_or_compute_importance

        tokens = calibration_tokens(cfg.calib, teacher.tokenizer, cfg.calib_samples, cfg.calib_seq_len, cfg.seed)
        importance = load_or_compute_importance(teacher, tokens, cache=cfg.cache, progress=progress)
    spec = from_sizes(teacher.dims, layers=cfg.layer_choice(), hidden=cfg.hidden, kv_groups=cfg.kv_groups,
                      heads_per_group=cfg.heads_per_group, mlp=cfg.mlp, order=cfg.order, importance=importance)
    return teacher.adapter.validate(spec)
