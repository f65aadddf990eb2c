"""Weight reconstruction at extraction, on tiny models of every family: it never raises the
calibration error of a layer's output over plain slicing, it lowers it for a reduced spec, and a
spec that keeps everything comes out unchanged."""

from __future__ import annotations

import pytest
import torch
from tiny import FAMILIES, VOCAB, tiny_model, tiny_tokenizer

from headstart.extract import build_student
from headstart.reconstruct import collect_moments, reconstruct
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher

CALIB = torch.randint(0, VOCAB, (8, 24), generator=torch.Generator().manual_seed(3))
IDS = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))


def _teacher(family: str) -> Teacher:
    return Teacher.from_model(tiny_model(family), tiny_tokenizer(), source=f"tiny-{family}")


def _reduced(family: str, teacher: Teacher) -> SubnetSpec:
    heads = dict(kv_groups=1, heads_per_group=2) if family == "mistral" else dict(kv_groups=2, heads_per_group=1)
    if family == "gpt_neox":
        heads = dict(kv_groups=3, heads_per_group=1)
    return teacher.adapter.validate(SubnetSpec.from_sizes(teacher.dims, layers=3, hidden=48, mlp=40, **heads))


def _inputs(model, adapter, layers) -> dict:
    """Inputs of the output projections of ``layers`` of ``model`` on CALIB: {(position, part): [N, in]}."""
    inputs: dict = {}

    def keep(key):
        def hook(_module, args):
            inputs[key] = args[0].reshape(-1, args[0].shape[-1]).double()
        return hook

    blocks = adapter.decoder_layers(model)
    hooks = [get(blocks[t]).register_forward_pre_hook(keep((i, part)))
             for i, t in enumerate(layers)
             for part, get in (("attn", adapter.attn_output_proj), ("mlp", adapter.mlp_output_proj))]
    with torch.no_grad():
        model(input_ids=CALIB)
    for h in hooks:
        h.remove()
    return inputs


def _layer_errors(teacher: Teacher, spec: SubnetSpec, plain, student) -> list[float]:
    """Per kept layer and projection, computed directly: squared error of ``student``'s projection fed the
    plain-sliced student's inputs, against the teacher layer's whole output sliced to the kept channels."""
    adapter = teacher.adapter
    x = _inputs(teacher.model, adapter, spec.layers)
    z = _inputs(plain, adapter, range(len(spec.layers)))
    rows, blocks, s_blocks = torch.as_tensor(spec.hidden), adapter.decoder_layers(teacher.model), \
        adapter.decoder_layers(student)
    errors = []
    for i, t in enumerate(spec.layers):
        for part, get in (("attn", adapter.attn_output_proj), ("mlp", adapter.mlp_output_proj)):
            y = x[(i, part)] @ get(blocks[t]).weight.detach().double()[rows].T
            pred = z[(i, part)] @ get(s_blocks[i]).weight.detach().double().T
            errors.append(float(((pred - y) ** 2).sum()))
    return errors


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reconstruction_never_raises_layer_error(family):
    teacher = _teacher(family)
    spec = _reduced(family, teacher)
    plain = build_student(teacher, spec)
    refit = build_student(teacher, spec)
    stats = reconstruct(teacher, spec, refit, CALIB, ridge=1e-3)
    before, after = _layer_errors(teacher, spec, plain, plain), _layer_errors(teacher, spec, plain, refit)
    for b, a in zip(before, after):
        assert a <= b * (1 + 1e-9) + 1e-9
    assert sum(after) < 0.9 * sum(before)  # the MLP drops neurons: the refit must help, not just tie
    assert stats["error_after"] < stats["error_before"]
    assert stats["error_before"] == pytest.approx(sum(before) / CALIB.numel(), rel=1e-4)


@pytest.mark.parametrize("family", ["smollm2", "gpt_neox"])
def test_full_spec_is_unchanged(family):
    teacher = _teacher(family)
    spec = SubnetSpec.full(teacher.dims)
    student = build_student(teacher, spec)
    reconstruct(teacher, spec, student, CALIB, ridge=1e-3)
    with torch.no_grad():
        diff = (student(input_ids=IDS).logits - teacher.model(input_ids=IDS).logits).abs().max()
    assert diff < 1e-4


def test_moments_are_sums_over_tokens():
    teacher = _teacher("llama")
    spec = _reduced("llama", teacher)
    student = build_student(teacher, spec)
    whole = collect_moments(teacher, student, spec, CALIB, batch_size=8)
    split = collect_moments(teacher, student, spec, CALIB, batch_size=3)
    assert set(whole) == {(i, part) for i in range(3) for part in ("attn", "mlp")}
    assert whole[(1, "mlp")].zz.shape == (40, 40) and whole[(1, "mlp")].zx.shape == (40, 96)
    assert whole[(1, "mlp")].zz.dtype == torch.float64
    assert torch.allclose(whole[(1, "mlp")].zx, split[(1, "mlp")].zx, rtol=1e-5, atol=1e-6)
    assert whole[(1, "mlp")].yy == pytest.approx(split[(1, "mlp")].yy, rel=1e-6)
