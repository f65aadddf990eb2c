"""The layer-wise search spaces: per-layer genomes stay legal and inside their bin, count right,
start from importance-tilted points, and the layout is read from the space file and the flag."""

from __future__ import annotations

import random

import pytest
import torch
from tiny import tiny_model
from transformers import LlamaConfig

from headstart.errors import ConfigError
from headstart.extraction import build_student
from headstart.importance import compute_importance
from headstart.models import get_adapter
from headstart.searching.bins import SizeGrid, make_bins
from headstart.searching.operators import crossover, mutate, sample, seed_genomes
from headstart.searching.space import Genome, SearchSpace, default_space, load_space
from headstart.selection import Orders
from headstart.teacher import Teacher


@pytest.fixture(scope="module")
def teachers():
    out = {}
    for fam in ("smollm2", "qwen3", "mistral"):
        t = Teacher.from_model(tiny_model(fam))
        imp = compute_importance(t, torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0)),
                                 progress=None)
        out[fam] = (t, Orders.from_importance(t.dims, imp))
    return out


@pytest.mark.parametrize("family", ["smollm2", "qwen3", "mistral"])
@pytest.mark.parametrize("granularity", ["coarse", "fine"])
def test_layer_wise_operators_stay_legal_in_the_bin_and_count_right(teachers, family, granularity):
    teacher, orders = teachers[family]
    space = SearchSpace(default_space(teacher.dims, granularity, "layer-wise"), teacher.adapter, orders)
    state, rng, differing = teacher.model.state_dict(), random.Random(0), 0
    for table in make_bins(SizeGrid(space), n_bins=2):
        pop = [sample(space, table, rng) for _ in range(3)]
        for i in range(12):
            a, b = rng.sample(pop, 2)
            for child in (crossover(space, table, a, b, rng), mutate(space, table, a, rng)):
                spec = space.to_spec(child)  # validated by the family's adapter
                params = teacher.adapter.counts(spec.shape).params
                assert table.bin.contains(params) and len(child.layer_sizes) == teacher.dims.num_hidden_layers
                assert space.shape(child) == spec.shape
                differing += not spec.uniform
                if i % 6 == 0:  # the analytic count is the built model's
                    assert params == sum(p.numel() for p in build_student(teacher, spec, state=state).parameters())
                pop.append(child)
    assert differing > 10  # the space does reach layer-wise students


def test_seeds_tilt_sizes_towards_influential_layers(teachers):
    teacher, orders = teachers["smollm2"]
    space = SearchSpace(default_space(teacher.dims, "coarse", "layer-wise"), teacher.adapter, orders)
    [table] = make_bins(SizeGrid(space), n_bins=1)
    seeds = seed_genomes(space, table, random.Random(0))
    uniform = [g for g in seeds if len(set(space.layer_sizes(g))) == 1]
    tilted = [g for g in seeds if len(set(space.layer_sizes(g))) > 1]
    assert uniform and tilted
    for g in tilted:
        assert table.bin.contains(teacher.adapter.counts(space.shape(g)).params)
        kept = [t for t in orders.layers if t in space.layer_ids(g)]  # most influential first
        first, last = g.layer_sizes[kept[0]], g.layer_sizes[kept[-1]]
        assert first[2] >= last[2] and first[0] * first[1] >= last[0] * last[1]


def test_layout_from_file_and_flag_and_family_refusal(teachers, tmp_path):
    teacher, orders = teachers["qwen3"]
    path = tmp_path / "space.yaml"
    path.write_text("layout: layer-wise\ngranularity: fine\n")
    cfg = load_space(path, teacher.dims)
    assert cfg.layout == "layer-wise" and cfg.to_dict()["layout"] == "layer-wise"
    assert load_space(path, teacher.dims, layout="uniform").layout == "uniform"
    assert "layout" not in default_space(teacher.dims).to_dict()  # uniform spaces keep their fingerprint
    path.write_text("layout: per-layer\n")
    with pytest.raises(ConfigError, match="layout 'per-layer' invalid"):
        load_space(path, teacher.dims)
    neox = get_adapter(tiny_model("gpt_neox").config)
    with pytest.raises(ConfigError, match="GPTNeoXConfig students keep the same sizes"):
        SearchSpace(default_space(neox.dims, layout="layer-wise"), neox, Orders.first_k(neox.dims))
    g = Genome(2, 64, 1, 2, 32, layer_sizes=((1, 2, 32), (2, 1, 64)))
    assert Genome.from_dict(g.to_dict()) == g and "layer_sizes" not in Genome(2, 64, 1, 2, 32).to_dict()


def test_thirty_layer_teacher_default_space_is_quick_and_legal():
    cfg = LlamaConfig(vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                      num_attention_heads=15, num_key_value_heads=5, head_dim=64)
    adapter = get_adapter(cfg)
    space = SearchSpace(default_space(adapter.dims, layout="layer-wise"), adapter, Orders.first_k(adapter.dims))
    rng = random.Random(0)
    [table] = make_bins(SizeGrid(space), [180_000_000], tolerance=0.05)
    pop = seed_genomes(space, table, rng) + [sample(space, table, rng) for _ in range(4)]
    for _ in range(30):
        pop.append(mutate(space, table, crossover(space, table, *rng.sample(pop, 2), rng), rng))
    for g in pop:
        assert table.bin.contains(adapter.counts(space.to_spec(g).shape).params)


def test_layout_flag_is_on_the_cli(capsys):
    from headstart.cli import main

    try:
        main(["search", "--help"])
    except SystemExit:
        pass
    assert "--space.layout {uniform,layer-wise}" in capsys.readouterr().out.replace("\n", " ")
