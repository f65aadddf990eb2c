"""SubnetSpec: validation messages, constructors, serialisation."""

from __future__ import annotations

import pytest
import torch

from headstart.errors import SpecError
from headstart.importance import Importance
from headstart.selection import from_sizes
from headstart.spec import SubnetSpec, TeacherDims

DIMS = TeacherDims(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   intermediate_size=96, vocab_size=512)


def _spec(**over):
    base = from_sizes(DIMS, layers=2, hidden=32, kv_groups=2, heads_per_group=1, mlp=48).to_dict()
    base.update(over)
    return SubnetSpec.from_dict(base)


@pytest.mark.parametrize(
    "over, message",
    [
        ({"layers": [0, 7]}, "index 7, out of range 0..3"),
        ({"layers": [1, 1]}, "repeats index 1"),
        ({"layers": []}, "keeps no layers"),
        ({"hidden": list(range(65))}, "only 64 hidden channels"),
        ({"hidden": [0, 0, 1]}, "repeats index 0"),
        ({"kv_groups": [[0, 1], []], "heads": [[[0], [0]], []]}, "kv_groups of layer 1 .* is empty"),
        ({"kv_groups": [[0, 2], [0, 1]]}, "index 2, out of range 0..1"),
        ({"heads": [[[0], [0, 1]], [[0], [0]]]}, "keeps 2 query heads, its first group keeps 1"),
        ({"heads": [[[0], []], [[0], [0]]]}, "heads of layer 0 .* group 1 is empty"),
        ({"heads": [[[0], [2]], [[0], [0]]]}, "index 2, out of range 0..1"),
        ({"mlp": [list(range(48)), []]}, "mlp of layer 1 .* is empty"),
        ({"mlp": [list(range(48))]}, "mlp has 1 entries but the spec keeps 2 layers"),
    ],
)
def test_validation_messages(over, message):
    with pytest.raises(SpecError, match=message):
        _spec(**over).validate(DIMS)


def test_layer_wise_counts_are_valid_and_described():
    spec = _spec(kv_groups=[[0, 1], [1]], heads=[[[0], [1]], [[0, 1]]], mlp=[list(range(48)), list(range(7))])
    shape = spec.validate(DIMS).shape
    assert not spec.uniform and shape.num_attention_heads == 2 and shape.intermediate_size == 48
    assert [(s.num_key_value_heads, s.heads_per_group, s.intermediate_size) for s in shape.layers()] == [
        (2, 1, 48), (1, 2, 7)]
    assert "layer-wise" in spec.describe() and spec.sizes()["layer_sizes"][1]["intermediate_size"] == 7
    uniform = _spec()
    assert uniform.uniform and "layer_sizes" not in uniform.sizes()


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"hidden": 128}, "hidden=128 is larger than the teacher's 64"),
        ({"heads_per_group": 3}, "heads_per_group=3 is larger than the teacher's 2"),
        ({"layers": 0}, "layers=0 must be at least 1"),
    ],
)
def test_from_sizes_rejects_oversize(sizes, message):
    with pytest.raises(SpecError, match=message):
        from_sizes(DIMS, **sizes)


def test_first_k_and_importance_modes():
    first = from_sizes(DIMS, layers=2, hidden=3, kv_groups=1, heads_per_group=1, mlp=2)
    assert first.layers == (0, 1) and first.hidden == (0, 1, 2) and first.mlp == ((0, 1), (0, 1))
    g = torch.Generator().manual_seed(0)
    imp = Importance(
        hidden=torch.rand(64, generator=g, dtype=torch.float64),
        heads=torch.rand(4, 4, generator=g, dtype=torch.float64),
        kv_groups=torch.tensor([[0.0, 1.0]] * 4, dtype=torch.float64),
        mlp=torch.rand(4, 96, generator=g, dtype=torch.float64),
        layers=torch.tensor([0.1, 0.9, 0.2, 0.8], dtype=torch.float64),
    )
    spec = from_sizes(DIMS, layers=2, hidden=3, kv_groups=1, heads_per_group=1, mlp=2,
                                 order="importance", importance=imp)
    assert spec.layers == (1, 3)  # top-2 block influence, kept in teacher order
    assert list(spec.hidden) == torch.argsort(imp.hidden, descending=True)[:3].tolist()
    assert spec.kv_groups == ((1,), (1,))
    best_head = int(torch.argmax(imp.heads[1].view(2, 2)[1]))
    assert spec.heads[0] == ((best_head,),)
    assert list(spec.mlp[1]) == torch.argsort(imp.mlp[3], descending=True)[:2].tolist()
    with pytest.raises(SpecError, match="needs importance scores"):
        from_sizes(DIMS, order="importance")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    spec = _spec()
    path = spec.save(tmp_path / f"s{suffix}", extra={"teacher": "x"})
    assert SubnetSpec.load(path) == spec
    assert not list(tmp_path.glob(".*tmp"))


def test_load_errors(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        SubnetSpec.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [0]\nhidden: [0]\nkv_groups: [[0]]\nheads: [[[0]]]\nmlp: [[0]]\nextra: 1\n")
    with pytest.raises(SpecError, match="unknown spec key"):
        SubnetSpec.load(bad)
    bad.write_text("layers: [0, x]\nhidden: [0]\nkv_groups: [[0]]\nheads: [[[0]]]\nmlp: [[0]]\n")
    with pytest.raises(SpecError, match="must hold integers"):
        SubnetSpec.load(bad)


def test_canonical_key_ignores_order_but_not_layer_order():
    a = SubnetSpec(layers=(0, 1), hidden=(2, 1), kv_groups=((1, 0), (0, 1)), heads=(((0,), (1,)), ((0,), (1,))),
                   mlp=((3, 2), (1, 0)))
    b = SubnetSpec(layers=(0, 1), hidden=(1, 2), kv_groups=((0, 1), (0, 1)), heads=(((1,), (0,)), ((0,), (1,))),
                   mlp=((2, 3), (0, 1)))
    assert a.canonical_json() == b.canonical_json()
    c = SubnetSpec(layers=(1, 0), hidden=(1, 2), kv_groups=((0, 1), (0, 1)), heads=(((1,), (0,)), ((0,), (1,))),
                   mlp=((2, 3), (0, 1)))
    assert a.canonical_json() != c.canonical_json()
