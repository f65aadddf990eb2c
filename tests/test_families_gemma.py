"""Gemma 2/3, Phi-3 and OLMo-2 specifics on tiny random configs (the parity, export, importance and
count tests every family gets are in test_families.py, driven by tiny.FAMILIES).

Exactness without a second implementation: a student that drops layers, query heads and MLP
neurons equals the teacher with those heads' columns of ``o_proj`` and those neurons' columns of
``down_proj`` zeroed (a dropped layer: all of them), which also checks that the sliding/global layer
types follow the kept layers."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from tiny import VOCAB, tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM, Gemma3TextConfig

from headstart.extraction import build_student, export
from headstart.lm_loss import sum_cross_entropy
from headstart.models import get_adapter
from headstart.searching.bins import SizeGrid, make_bins
from headstart.searching.fitness import Fitness
from headstart.searching.operators import mutate, sample
from headstart.searching.space import SearchSpace, default_space
from headstart.selection import Orders, from_sizes, full
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher

IDS = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
WINDOWS = torch.randint(0, VOCAB, (5, 17), generator=torch.Generator().manual_seed(2))


def _teacher(family: str) -> Teacher:
    return Teacher.from_model(tiny_model(family), tiny_tokenizer(), source=f"tiny-{family}")


def _logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _zeroed(teacher: Teacher, spec: SubnetSpec) -> torch.nn.Module:
    """The teacher with everything ``spec`` drops zeroed at the output projections' input columns."""
    model, adapter, d = copy.deepcopy(teacher.model), teacher.adapter, teacher.dims
    with torch.no_grad():
        for t, layer in enumerate(adapter.decoder_layers(model)):
            kept_heads, kept_neurons = set(), set()
            if t in spec.layers:
                i = spec.layers.index(t)
                kept_heads = {g * d.heads_per_group + j for g, hs in zip(spec.kv_groups[i], spec.heads[i]) for j in hs}
                kept_neurons = set(spec.mlp[i])
            o, down = adapter.attn_output_proj(layer).weight, adapter.mlp_output_proj(layer).weight
            for head in set(range(d.num_attention_heads)) - kept_heads:
                o[:, head * d.head_dim:(head + 1) * d.head_dim] = 0
            for n in set(range(d.intermediate_size)) - kept_neurons:
                down[:, n] = 0
    return model


@pytest.mark.parametrize("family", ["gemma3", "gemma2", "phi3", "olmo2"])
def test_dropping_equals_zeroing_the_output_columns(family):
    teacher = _teacher(family)
    # layers 0, 2, 3 (a global layer dropped): the student's types are sliding, sliding, global
    heads = (((1,), (0,)), ((0,), (1,)), ((0,), (0,)))
    if family == "olmo2":  # its q/k norms span all heads: only whole-head students are exact
        heads = (((0, 1), (0, 1)),) * 3
    spec = SubnetSpec(layers=(0, 2, 3), hidden=tuple(range(64)), kv_groups=((0, 1), (1, 0), (0, 1)), heads=heads,
                      mlp=tuple(tuple(random.Random(i).sample(range(96), 40)) for i in range(3)))
    student = build_student(teacher, spec)
    if family.startswith("gemma"):
        assert student.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
        assert student.config.query_pre_attn_scalar == 24 and student.config.sliding_window == 8
    reference = _zeroed(teacher, spec)
    assert (_logits(student) - _logits(reference)).abs().max() < 1e-5
    assert (_logits(student) - _logits(teacher.model)).abs().max() > 1e-3  # the cut does change the model


def _residual_in(model, adapter, ids=IDS) -> torch.Tensor:
    """The residual stream entering the first decoder layer (embedding times its scale)."""
    seen = {}

    def hook(_m, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"]).detach()

    handle = adapter.decoder_layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return seen["x"]


@pytest.mark.parametrize("family", ["gemma3", "gemma2"])
def test_cut_hidden_keeps_the_teachers_stream_and_head(family):
    """sqrt(hidden) embedding scale: a student of width 40 starts from the teacher's residual stream on
    its kept channels, and its tied head (rescaled embedding, compensated final-norm gain) gives the
    logits of a plain slice of the teacher's head and gain."""
    teacher = _teacher(family)
    spec = from_sizes(teacher.dims, hidden=40)
    kept = torch.as_tensor(spec.hidden)
    student = build_student(teacher, spec)
    adapter = teacher.adapter
    want = _residual_in(teacher.model, adapter)[..., kept]
    assert torch.allclose(_residual_in(student, adapter), want, rtol=1e-5, atol=1e-6)
    x = torch.randn(7, 40, generator=torch.Generator().manual_seed(0)) * 3
    gain = teacher.model.model.norm.weight.detach()[kept]
    eps = teacher.model.config.rms_norm_eps
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1 + gain)
    z = normed @ teacher.model.model.embed_tokens.weight.detach()[:, kept].T
    cap = adapter.logit_softcap
    ref = z if cap is None else cap * torch.tanh(z / cap)
    with torch.no_grad():
        got = adapter.logits(student, student.model.norm(x))
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_soft_capped_loss_equals_transformers():
    teacher = _teacher("gemma2")
    model = teacher.model
    assert teacher.adapter.logit_softcap == 2.0
    with torch.no_grad():
        hf = float(model(input_ids=WINDOWS, labels=WINDOWS).loss)
    total, count = sum_cross_entropy(model, WINDOWS, batch_size=2, chunk=7)
    assert count == WINDOWS[:, 1:].numel()
    assert total / count == pytest.approx(hf, rel=1e-5)
    assert Fitness(teacher, WINDOWS, batch_size=3)(full(teacher.dims)) == pytest.approx(hf, rel=1e-5)
    uncapped = copy.deepcopy(model)
    uncapped.config.final_logit_softcapping = None
    with torch.no_grad():  # the cap changes the loss of this model: the equality above means something
        assert abs(float(uncapped(input_ids=WINDOWS, labels=WINDOWS).loss) - hf) > 1e-3


def test_gemma2_export_keeps_soft_capping(tmp_path):
    teacher = _teacher("gemma2")
    spec = from_sizes(teacher.dims, layers=3, hidden=48, kv_groups=2, heads_per_group=1, mlp=64)
    out = export(teacher, spec, tmp_path / "s")
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.final_logit_softcapping == 2.0 and reloaded.config.attn_logit_softcapping == 5.0
    assert (_logits(reloaded) - _logits(build_student(teacher, spec))).abs().max() < 1e-5


# Gemma-3-270M's shape, without its weights (the real teacher is tested in test_real_gemma.py).
_GEMMA3_270M = dict(vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512)


def test_gemma3_270m_shape_counts_and_space():
    config = Gemma3TextConfig(**_GEMMA3_270M)
    adapter = get_adapter(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    real = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert adapter.counts().params == real == 268_098_176  # as the GGUF teacher loads
    assert adapter.counts().embedding_params == 262_144 * 640
    space = SearchSpace(default_space(adapter.dims), adapter, Orders.first_k(adapter.dims))
    assert {hp for _, _, hp in space.attention} == {1, 2, 3, 4}  # 3 heads only where hidden % 3 == 0
    assert all(h % (g * hp) == 0 for h, g, hp in space.attention)
    grid = SizeGrid(space)
    rng = random.Random(0)
    for table in make_bins(grid, budgets=[134_000_000], tolerance=0.05):
        for _ in range(20):
            genome = mutate(space, table, sample(space, table, rng), rng)
            spec = space.to_spec(genome)
            config = adapter.student_config(spec)
            assert config.head_dim == 256 and len(config.layer_types) == spec.num_hidden_layers
            assert table.bin.contains(adapter.counts(spec.shape).params)
