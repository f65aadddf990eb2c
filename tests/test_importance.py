"""Importance scores mean what they claim, and the cache is reused."""

from __future__ import annotations

import pytest
import torch
from tiny import VOCAB, tiny_model

import headstart.importance as importance_mod
from headstart.importance import compute_importance, importance_cache_path, load_or_compute_importance
from headstart.teacher import Teacher

TOKENS = torch.randint(0, VOCAB, (4, 24), generator=torch.Generator().manual_seed(0))


def _planted_llama() -> Teacher:
    model = tiny_model("llama")
    layers = model.model.layers
    with torch.no_grad():
        layers[1].mlp.up_proj.weight[7].zero_()  # neuron 7 of layer 1 is dead
        layers[2].self_attn.v_proj.weight[16:32].zero_()  # kv group 1 of layer 2 outputs nothing
        layers[3].self_attn.o_proj.weight.zero_()  # layer 3 does nothing: identity block
        layers[3].mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight[:, 5].mul_(50.0)  # channel 5 dominates the residual stream
    return Teacher.from_model(model)


def test_scores_find_planted_structure():
    teacher = _planted_llama()
    scores = compute_importance(teacher, TOKENS)
    d = teacher.dims
    assert scores.hidden.shape == (d.hidden_size,)
    assert scores.heads.shape == (d.num_hidden_layers, d.num_attention_heads)
    assert scores.mlp[1, 7] == 0 and scores.mlp[1].min() == 0 and (scores.mlp[0] > 0).all()
    assert scores.heads[2, 2:4].abs().max() == 0  # both query heads of group 1 read zero values
    assert scores.kv_groups[2, 1] == 0 and scores.kv_groups[2, 0] > 0
    assert scores.layers[3] < 1e-9 < scores.layers[:3].min()
    assert int(scores.hidden.argmax()) == 5


def test_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path))
    teacher = Teacher.from_model(tiny_model("qwen2"))
    first = load_or_compute_importance(teacher, TOKENS)
    assert importance_cache_path(teacher, TOKENS).exists()

    def fail(*_a, **_k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(importance_mod, "compute_importance", fail)
    again = load_or_compute_importance(teacher, TOKENS)
    assert torch.equal(first.mlp, again.mlp) and torch.equal(first.layers, again.layers)
    with pytest.raises(AssertionError, match="recomputed"):  # other data: another key
        load_or_compute_importance(teacher, TOKENS[:2])
