"""Teacher loading from directories, and every way it can fail."""

from __future__ import annotations

import time

import pytest
from tiny import save_tiny_teacher
from transformers import GPT2Config, GPT2LMHeadModel

from headstart.errors import CheckpointError, TeacherError
from headstart.models import supported_model_types
from headstart.teacher import load_teacher, resolve_source


def test_load_directory_with_tokenizer(tiny_teacher_dirs):
    teacher = load_teacher(tiny_teacher_dirs["qwen2"])
    assert teacher.model.config.model_type == "qwen2"
    assert teacher.tokenizer is not None and teacher.tokenizer.eos_token == "<|endoftext|>"
    assert len(teacher.fingerprint) == 16
    again = load_teacher(tiny_teacher_dirs["qwen2"])
    assert again.fingerprint == teacher.fingerprint
    assert load_teacher(tiny_teacher_dirs["llama"]).fingerprint != teacher.fingerprint


def test_dtype_choice(tiny_teacher_dirs):
    import torch

    teacher = load_teacher(tiny_teacher_dirs["llama"], dtype="bfloat16")
    assert next(teacher.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(TeacherError, match="unknown dtype"):
        load_teacher(tiny_teacher_dirs["llama"], dtype="int3")


def test_missing_and_truncated_checkpoints(tmp_path):
    path = save_tiny_teacher("llama", tmp_path / "t")
    (path / "config.json").rename(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_teacher(path)
    (tmp_path / "config.json").rename(path / "config.json")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt or incomplete"):
        load_teacher(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_teacher(path)


def test_unsupported_architecture_names_supported(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "g")
    with pytest.raises(TeacherError, match="unsupported architecture 'gpt2'") as err:
        load_teacher(tmp_path / "g")
    for name in supported_model_types():
        assert name in str(err.value)


def test_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(TeacherError, match="offline"):
        load_teacher("HuggingFaceTB/SmolLM2-360M")
    assert time.monotonic() - start < 10


def test_resolve_source_kinds(tmp_path):
    assert resolve_source("EleutherAI/pythia-410m").kind == "hub"
    with pytest.raises(TeacherError, match="does not exist"):
        resolve_source(str(tmp_path / "missing"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    src = resolve_source(tmp_path)
    assert (src.kind, src.gguf_file) == ("gguf", "m.gguf")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TeacherError, match="not a .gguf"):
        resolve_source(tmp_path / "x.txt")
