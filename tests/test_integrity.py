"""A damaged checkpoint never loads: config fields, tensor sets, GGUF, pickles, remote code, tokenizers."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import save_tiny_teacher, tiny_model

from headstart.errors import CheckpointError, TeacherError
from headstart.teacher import load_model, load_teacher, load_tokenizer, model_config


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text and "StrictDataclass" not in text, text
    return text


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_tiny_teacher("llama", tmp_path_factory.mktemp("good") / "t")


def _with_config(good, tmp_path, **changes):
    path = tmp_path / "t"
    shutil.copytree(good, path)
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
    return path


CONFIG_FAULTS = [
    ({"num_hidden_layers": 6}, "num_hidden_layers is 6 but the weights hold layers 0-3"),
    ({"num_hidden_layers": 2}, "num_hidden_layers is 2 but the weights hold layers 0-3"),
    ({"num_hidden_layers": -1}, "num_hidden_layers is -1; it must be a positive integer"),
    ({"num_hidden_layers": 0}, "num_hidden_layers is 0"),
    ({"max_position_embeddings": 0}, "max_position_embeddings is 0"),
    ({"vocab_size": 0}, "vocab_size is 0"),
    ({"intermediate_size": -5}, "intermediate_size is -5"),
    ({"num_key_value_heads": 3}, "num_attention_heads (4) is not a multiple of num_key_value_heads (3)"),
    ({"hidden_size": "64"}, "Field 'hidden_size' expected int, got str"),
    ({"num_hidden_layers": 4.5}, "Field 'num_hidden_layers' expected int, got float"),
    ({"num_attention_heads": 3, "head_dim": None}, "not a multiple of the number of attention heads"),
]


@pytest.mark.parametrize(("changes", "fragment"), CONFIG_FAULTS, ids=[str(c) for c, _ in CONFIG_FAULTS])
@pytest.mark.parametrize("loader", [model_config, load_model, load_teacher], ids=lambda f: f.__name__)
def test_a_config_no_model_can_have_is_refused_before_the_weights(good, tmp_path, changes, fragment, loader):
    path = _with_config(good, tmp_path, **changes)
    with pytest.raises(CheckpointError) as err:
        loader(path)
    text = _one_line(err)
    assert fragment in text and str(path / "config.json") in text


def test_a_config_with_other_shapes_than_the_weights_is_refused(good, tmp_path):
    path = _with_config(good, tmp_path, num_key_value_heads=4)  # legal config, but k/v are 2 heads in the files
    model_config(path)  # the config alone is fine
    with pytest.raises(CheckpointError, match=r"k_proj.weight .* has shape \(32, 64\) but its config implies") as err:
        load_model(path)
    _one_line(err)


def test_a_removed_tensor_is_refused_by_name(good, tmp_path, caplog):
    path = tmp_path / "t"
    shutil.copytree(good, path)
    state = load_file(path / "model.safetensors")
    del state["model.layers.2.mlp.down_proj.weight"]
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError) as err:
        load_teacher(path)
    text = _one_line(err)
    assert "lack the tensor model.layers.2.mlp.down_proj.weight" in text and "randomly initialised" in text
    assert "LOAD REPORT" not in caplog.text  # transformers' table is not shown; our line replaces it


def test_an_extra_tensor_is_refused(good, tmp_path):
    path = tmp_path / "t"
    shutil.copytree(good, path)
    state = load_file(path / "model.safetensors")
    state["model.extra.weight"] = torch.zeros(3)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="hold the tensor model.extra.weight that its config has no place"):
        load_model(path)


def test_tied_embeddings_are_not_missing(tmp_path):
    path = save_tiny_teacher("smollm2", tmp_path / "tied")
    assert "lm_head.weight" not in load_file(path / "model.safetensors")
    assert load_model(path).config.tie_word_embeddings


def _tiny_gguf(path):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(64)
    writer.add_embedding_length(16)
    writer.add_feed_forward_length(32)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((32, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("keep", [3, 10, 24, 60, 200, 0.5])
def test_a_truncated_gguf_is_one_line(tmp_path, keep):
    data = _tiny_gguf(tmp_path / "full.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    for loader in (model_config, load_model):
        with pytest.raises(CheckpointError) as err:
            loader(cut)
        assert str(cut) in _one_line(err)


def test_a_gguf_whose_metadata_implies_more_tensors_than_it_holds_is_refused(tmp_path):
    path = _tiny_gguf(tmp_path / "full.gguf")  # 2 blocks declared, only the embedding stored
    assert model_config(path).num_hidden_layers == 2
    with pytest.raises(CheckpointError, match="lack the tensor model.layers.0.") as err:
        load_model(path)
    assert str(path) in _one_line(err)


def test_a_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    model = tiny_model("llama")
    model.config.save_pretrained(tmp_path / "bin")
    torch.save({**model.state_dict(), "payload": Payload()}, tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bin")
    text = _one_line(err)
    assert "pickled objects" in text and "weights_only" in text and "will likely succeed" not in text
    assert not marker.exists()


@pytest.mark.parametrize(("code", "fragment"), [
    (None, "is incomplete"),
    ("raise ImportError('a dependency is missing')\n", "ImportError: a dependency is missing"),
    ("x = (\n", "SyntaxError"),
    ("VALUE = 1\n", "AttributeError"),
])
def test_remote_code_failures_are_one_line(good, tmp_path, code, fragment):
    path = _with_config(good, tmp_path, auto_map={"AutoConfig": "remote_cfg.MyConfig",
                                                  "AutoModelForCausalLM": "remote_cfg.MyModel"})
    if code is not None:
        (path / "remote_cfg.py").write_text(code)
    with pytest.raises(TeacherError) as err:
        load_model(path, trust_remote_code=True)
    text = _one_line(err)
    assert fragment in text and "auto_map" in text


def test_a_teacher_without_tokenizer_files_can_be_required(good, tmp_path, caplog):
    path = tmp_path / "t"
    shutil.copytree(good, path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).unlink()
    with caplog.at_level(logging.WARNING):
        assert load_tokenizer(path) is None
    assert "ships no tokenizer" in caplog.text
    with pytest.raises(TeacherError) as err:
        load_tokenizer(path, require=True)
    assert f"{path} ships no tokenizer" in _one_line(err)
    with pytest.raises(TeacherError, match="ships no tokenizer"):
        load_teacher(path, require_tokenizer=True)
    assert load_teacher(path).tokenizer is None


def test_a_damaged_tokenizer_is_named(good, tmp_path):
    path = tmp_path / "t"
    shutil.copytree(good, path)
    (path / "tokenizer.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(TeacherError, match="could not be loaded") as err:
        load_tokenizer(path, require=True)
    _one_line(err)


def test_a_hub_tokenizer_offline_says_the_hub_is_unreachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TeacherError) as err:
        load_tokenizer("HuggingFaceTB/SmolLM2-360M", require=True)
    text = _one_line(err)
    assert "hub is unreachable" in text and "ships no tokenizer" not in text

