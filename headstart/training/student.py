"""The student a run trains: an exported directory, a spec file of the teacher (extracted on the fly),
or ``random:<spec file or directory>``, the same architecture re-initialised with the family's own
init (the paper's baseline); and the layer map of its hidden-state term."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from headstart.config.train import HiddenConfig
from headstart.errors import ConfigError
from headstart.spec import SubnetSpec


def is_spec_file(path: Path) -> bool:
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
    elif is_spec_file(path):
        if teacher is None:
            raise ConfigError(f"--student {source} is a spec of a teacher; pass that --teacher too")
        spec = SubnetSpec.load(path)
        if not random_init:
            from headstart.extraction import build_student

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
    from headstart.extraction import SPEC_FILE

    path = Path(source.removeprefix("random:")).expanduser()
    if is_spec_file(path):
        return SubnetSpec.load(path)
    if (path / SPEC_FILE).is_file():
        return SubnetSpec.load(path / SPEC_FILE)
    return None


def hidden_targets(hidden: HiddenConfig, source: str, teacher: Any) -> Any:
    """The :class:`~headstart.training.hidden_loss.HiddenMap` of the hidden-state term (``None`` when it is off)."""
    from headstart.training.hidden_loss import hidden_map

    if hidden.weight <= 0:
        return None
    spec = student_spec(source)
    if spec is None or teacher is None:
        raise ConfigError(f"hidden.weight needs a student cut from --teacher (a spec file or an extracted "
                          f"checkpoint with its spec); {source} has no spec")
    teacher.adapter.validate(spec)
    return hidden_map(spec, hidden.layers)
