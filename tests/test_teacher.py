"""Teacher loading from directories, and every way it can fail."""

from __future__ import annotations

import time

import pytest
import torch
from tiny import save_tiny_teacher, tiny_model, tiny_tokenizer
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


def test_converted_teacher_is_exact_and_a_bad_conversion_leaves_nothing(tmp_path, monkeypatch):
    """The builtin teacher's GGUF -> plain directory conversion: exact weights and vocabulary, or nothing."""
    import safetensors.torch

    from headstart import assets
    from headstart.errors import HeadstartError

    model, tok = tiny_model("smollm2"), tiny_tokenizer()
    out = assets.save_converted(model, tok, tmp_path / "hf")
    teacher = load_teacher(out)
    want, got = model.state_dict(), teacher.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert teacher.tokenizer.get_vocab() == tok.get_vocab()

    def lossy(m, path, metadata=None):  # a conversion that rounds the weights
        safetensors.torch.save_file({k: v.half().float().clone() for k, v in m.state_dict().items()
                                     if k != "lm_head.weight"}, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_model", lossy)
    with pytest.raises(HeadstartError, match="did not reproduce"):
        assets.save_converted(model, tok, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == [tmp_path / "hf"]
