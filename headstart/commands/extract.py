"""``headstart extract``: cut a sub-network out of a teacher and export it as a HF checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.configs import ExtractConfig
from headstart.selection import from_sizes
from headstart.spec import SubnetSpec


def run(cfg: ExtractConfig) -> Path:
    """Resolve the spec (file or sizes), export it, return the checkpoint directory."""
    from headstart import preflight
    from headstart.extract import export
    from headstart.models import get_adapter
    from headstart.teacher import load_teacher, model_config

    out = preflight.out_path(cfg.out, exist_ok=False)  # everything checked before the (slow) teacher load
    adapter = get_adapter(model_config(cfg.teacher))
    spec_file = adapter.validate(SubnetSpec.load(cfg.spec)) if cfg.spec else None
    if spec_file is None:  # the sizes, in first-k order (importance picks other indices of the same sizes)
        adapter.validate(from_sizes(adapter.dims, layers=cfg.layer_choice(), hidden=cfg.hidden,
                                    kv_groups=cfg.kv_groups, heads_per_group=cfg.heads_per_group, mlp=cfg.mlp))
    teacher = load_teacher(cfg.teacher, dtype=cfg.weights_dtype)
    spec = teacher.adapter.validate(spec_file) if spec_file is not None else spec_from_sizes(cfg, teacher)
    meta = {"mode": cfg.mode if spec_file is None else "spec-file", "teacher_params": teacher.adapter.counts().params}
    student = None
    if cfg.reconstruct:
        from headstart.calibration import calibration_tokens
        from headstart.extract import build_student
        from headstart.reconstruct import reconstruct

        tokens = calibration_tokens(cfg.calib, teacher.tokenizer, cfg.calib_samples, cfg.calib_seq_len, cfg.seed)
        student = build_student(teacher, spec)
        meta["reconstruction"] = reconstruct(teacher, spec, student, tokens, **cfg.reconstruction())
    return export(teacher, spec, out, student=student, metadata=meta)


def spec_from_sizes(cfg: ExtractConfig, teacher: Any) -> SubnetSpec:
    """The spec of ``--layers/--hidden/...`` in ``--mode`` order (importance from one calibration pass)."""
    importance = None
    if cfg.mode == "importance":
        from headstart.calibration import calibration_tokens
        from headstart.importance import load_or_compute_importance

        tokens = calibration_tokens(cfg.calib, teacher.tokenizer, cfg.calib_samples, cfg.calib_seq_len, cfg.seed)
        importance = load_or_compute_importance(teacher, tokens, cache=cfg.cache)
    spec = from_sizes(
        teacher.dims, layers=cfg.layer_choice(), hidden=cfg.hidden, kv_groups=cfg.kv_groups,
        heads_per_group=cfg.heads_per_group, mlp=cfg.mlp, mode=cfg.mode, importance=importance,
    )
    return teacher.adapter.validate(spec)


def summary(out: Path, cfg: ExtractConfig) -> str:
    """Where the student is, its sizes and its share of the teacher."""
    from headstart.config import read_yaml
    from headstart.extract import SPEC_FILE

    meta = read_yaml(out / SPEC_FILE, "spec")
    spec = SubnetSpec.from_dict(meta["spec"])
    share = f" ({meta['params'] / meta['teacher_params']:.1%} of the teacher)" if meta.get("teacher_params") else ""
    return f"{out}: {spec.describe()}, {meta['params']:,} parameters{share}"
