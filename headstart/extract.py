"""Extraction: spec + teacher -> an in-memory student, and -> a standard Hugging Face checkpoint.

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

from headstart.errors import CheckpointError
from headstart.io import atomic_dir, remove_stale_temps
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


def load_spec_of(path: str | os.PathLike[str]) -> SubnetSpec:
    """The spec an exported checkpoint directory was cut with."""
    return SubnetSpec.load(Path(path) / SPEC_FILE)
