"""`headstart cache-logits` and `headstart train` end to end on a real prepared directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from tiny import TEXT, prepared_corpus, save_tiny_teacher, tiny_tokenizer
from train_support import one_thread  # noqa: F401 (autouse fixture)
from transformers import AutoModelForCausalLM, LlamaConfig

from headstart.cli import main
from headstart.errors import DataError
from headstart.selection import from_sizes
from headstart.spec import SubnetSpec
from headstart.teacher import load_teacher


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny teacher, a prepared directory (its tokenizer) and a spec of the teacher."""

    root = tmp_path_factory.mktemp("train_cli")
    teacher_dir = save_tiny_teacher("smollm2", root / "teacher")
    data = prepared_corpus(root, docs=12, repeat=6)
    teacher = load_teacher(teacher_dir)
    spec_file = from_sizes(teacher.dims, layers=2, mlp=48).save(root / "spec.yaml")
    return {"root": root, "teacher": str(teacher_dir), "data": str(data), "spec": str(spec_file)}


def _run(argv: list[str]) -> int:
    return main([*argv])


def test_cache_then_train_from_yaml_exports_a_hf_student(setup, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _run(["cache-logits", "--teacher", setup["teacher"], "--data", setup["data"], "--out", str(cache),
                 "--seq-len", "16", "--k", "8", "--batch-size", "4", "--dtype", "float32", "--no-progress"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from headstart.data import WindowLoader

    loader = WindowLoader(setup["data"], "train", 16, 1, shuffle=False)
    every = loader.read_windows(np.arange(loader.windows_per_epoch))
    assert info["windows"] == len(torch.unique(every, dim=0)) > 10  # every window, the last partial batch too
    assert info["bytes_per_token"] < 40
    cfg = {"teacher": setup["teacher"], "student": setup["spec"], "data": setup["data"], "out": str(tmp_path / "run"),
           "teacher_cache": str(cache), "tokens": 6 * 2 * 16, "seq_len": 16, "batch_size": 2,
           "validation": {"every": 3, "windows": 4}, "checkpoint": {"every": 3}, "runtime": {"dtype": "float32"},
           "kd": {"kind": "reverse", "alpha": 0.5}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert _run(["train", "--config", str(tmp_path / "cfg.yaml"), "--optim.lr", "2e-3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    student_dir = tmp_path / "run" / "student"
    assert result["student"] == str(student_dir) and result["steps"] == 6
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    assert model.config.num_hidden_layers == 2 and model.config.intermediate_size == 48
    summary = json.loads((student_dir / "training_summary.json").read_text())
    assert summary["tokens"] == 6 * 2 * 16 and summary["teacher_tokens"] == 0 and summary["cache_teacher_tokens"] > 0
    assert summary["student_train_flops"] > 0 and "val_loss" in summary["final"]
    assert (student_dir / "tokenizer.json").is_file()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 2e-3 and saved["kd"]["kind"] == "reverse"
    assert saved["paths"]["teacher_cache"] == str(cache)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(rows) == 6 and all(r["kd"] > 0 for r in rows)
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("step,tokens,")
    # the exported weights are the trained ones
    trained = model.state_dict()
    extracted = SubnetSpec.load(setup["spec"])
    from headstart.extraction import build_student

    untrained = build_student(load_teacher(setup["teacher"]), extracted).state_dict()
    assert not torch.equal(trained["model.layers.0.mlp.up_proj.weight"], untrained["model.layers.0.mlp.up_proj.weight"])
    # the exported student trains on from its directory, with the cache alone (no teacher loaded)
    assert _run(["train", "--student", str(student_dir), "--teacher-cache", str(cache), "--data", setup["data"],
                 "--out", str(tmp_path / "again"), "--tokens", "64", "--seq-len", "16", "--batch-size", "2",
                 "--runtime.dtype", "float32", "--no-progress", "--validation.windows", "2"]) == 0
    again = json.loads((tmp_path / "again" / "student" / "training_summary.json").read_text())
    assert again["teacher"] is None and again["teacher_fingerprint"] == summary["teacher_fingerprint"]
    assert again["final"]["kd"] > 0


def test_cache_of_a_seeds_first_tokens_serves_its_runs(setup, tmp_path, capsys):
    """`--tokens N --seed S` caches the windows a run of seed S draws in its first N tokens, whatever its
    batch size: such runs train from it, and the cache is smaller than the split."""
    from headstart.data import WindowLoader

    cache = tmp_path / "cache"
    assert _run(["cache-logits", "--teacher", setup["teacher"], "--data", setup["data"], "--out", str(cache),
                 "--seq-len", "16", "--k", "8", "--tokens", str(8 * 16), "--seed", "3", "--dtype", "float32",
                 "--no-progress"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    loader = WindowLoader(setup["data"], "train", 16, 1, seed=3)
    drawn = loader.read_windows(loader.window_ids(0, 8))
    assert info["windows"] == len(torch.unique(drawn, dim=0)) < loader.windows_per_epoch  # repeats stored once
    for batch in ("2", "4"):
        assert _run(["train", "--student", setup["spec"], "--teacher", setup["teacher"], "--teacher-cache",
                     str(cache), "--data", setup["data"], "--out", str(tmp_path / f"b{batch}"), "--tokens",
                     str(8 * 16), "--seq-len", "16", "--batch-size", batch, "--seed", "3", "--runtime.dtype", "float32",
                     "--no-progress", "--validation.windows", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--student", setup["spec"], "--teacher", setup["teacher"], "--teacher-cache", str(cache),
              "--data", setup["data"], "--out", str(tmp_path / "other"), "--tokens", str(8 * 16), "--seq-len", "16",
              "--batch-size", "2", "--seed", "4", "--runtime.dtype", "float32", "--no-progress",
              "--validation.windows", "2"]) == 2
    assert "cache" in capsys.readouterr().err  # another seed draws other windows


def test_online_random_student_with_padded_teacher_vocab(setup, tmp_path, capsys):
    """A teacher with 64 padded embedding rows still distils over the tokenizer's 512 tokens."""
    torch.manual_seed(5)  # not the student's init seed (0): a random student must not equal its teacher
    padded = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=576, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256))
    padded.save_pretrained(tmp_path / "padded")
    tiny_tokenizer().save_pretrained(tmp_path / "padded")
    assert _run(["train", "--teacher", str(tmp_path / "padded"), "--student", "random:" + str(tmp_path / "padded"),
                 "--data", setup["data"], "--out", str(tmp_path / "run2"), "--tokens", str(4 * 2 * 16),
                 "--seq-len", "16", "--batch-size", "2", "--runtime.dtype", "float32", "--no-progress",
                 "--kd.kind", "jsd", "--validation.windows", "2"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "run2" / "metrics.jsonl")]
    assert all(r["kd"] > 0 and r["loss"] < 20 for r in rows)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run2" / "student").config.vocab_size == 576


def test_data_of_another_tokenizer_is_refused(setup, tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from headstart.data import prepare

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([TEXT[::-1]] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                                   show_progress=False))
    other = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    src = tmp_path / "c"
    src.mkdir()
    for i in range(6):
        (src / f"d{i}.txt").write_text(TEXT * 4)
    data = prepare([str(src)], other, tmp_path / "other", tokenizer_source="other", val_frac=1, search_frac=1,
                   workers=1)
    code = _run(["train", "--teacher", setup["teacher"], "--student", setup["spec"], "--data", str(data),
                 "--out", str(tmp_path / "run"), "--tokens", "64", "--seq-len", "8", "--batch-size", "2",
                 "--no-progress"])
    assert code == 2
    assert "was prepared with tokenizer" in capsys.readouterr().err
    with pytest.raises(DataError):
        from headstart.training.stage import check_data

        check_data(str(data), load_teacher(setup["teacher"]), AutoModelForCausalLM.from_pretrained(setup["teacher"]),
                   None)
