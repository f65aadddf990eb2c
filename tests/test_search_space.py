"""Search space, genome, bins and operators: every point legal, inside its bin, counted right."""

from __future__ import annotations

import random

import pytest
import torch
from tiny import FAMILIES, tiny_model
from transformers import LlamaConfig

from headstart.config.search import budgets as parse_params
from headstart.errors import ConfigError
from headstart.extraction import build_student
from headstart.importance import compute_importance
from headstart.models import get_adapter
from headstart.searching.bins import SizeGrid, make_bins
from headstart.searching.operators import crossover, mutate, repair, sample
from headstart.searching.space import Genome, SearchSpace, default_space, load_space, resize
from headstart.selection import Orders, from_sizes
from headstart.teacher import Teacher


@pytest.fixture(scope="module")
def teachers():
    out = {}
    for fam in FAMILIES:
        t = Teacher.from_model(tiny_model(fam))
        imp = compute_importance(t, torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0)))
        out[fam] = (t, imp)
    return out


def _space(teacher, imp, granularity="coarse", order="importance"):
    orders = Orders.from_importance(teacher.dims, imp) if order == "importance" else Orders.first_k(teacher.dims)
    return SearchSpace(default_space(teacher.dims, granularity), teacher.adapter, orders)


def _real_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("granularity", ["coarse", "fine"])
def test_every_operator_yields_legal_specs_inside_the_bin(teachers, family, granularity):
    teacher, imp = teachers[family]
    space = _space(teacher, imp, granularity)
    tables = make_bins(SizeGrid(space), n_bins=3)
    assert len(tables) == 3
    for seed in range(3):
        rng = random.Random(seed)
        for table in tables:
            pop = [sample(space, table, rng) for _ in range(4)]
            for _ in range(25):
                a, b = rng.sample(pop, 2)
                for child in (crossover(space, table, a, b, rng), mutate(space, table, a, rng)):
                    spec = space.to_spec(child)
                    teacher.adapter.validate(spec)  # the family's own config accepts it
                    assert table.bin.contains(teacher.adapter.counts(spec.shape).params)
                    assert len(space.layer_ids(child)) == child.layers
                    pop.append(child)


@pytest.mark.parametrize("family", ["smollm2", "gpt_neox", "mistral", "qwen3"])
def test_counted_params_equal_the_built_model(teachers, family):
    teacher, imp = teachers[family]
    space = _space(teacher, imp, "fine")
    grid = SizeGrid(space)
    state = teacher.model.state_dict()
    rng = random.Random(1)
    for table in make_bins(grid, n_bins=2):
        for _ in range(3):
            g = mutate(space, table, sample(space, table, rng), rng)
            spec = space.to_spec(g)
            real = _real_params(build_student(teacher, spec, state=state))
            assert teacher.adapter.counts(spec.shape).params == real == grid.params_of(g.sizes())


def test_gqa_space_of_a_real_shaped_teacher_is_legal_for_llama_config():
    # SmolLM2-135M's shape: LlamaConfig refuses hidden % heads != 0, e.g. hidden 64 with 3 heads.
    cfg = LlamaConfig(vocab_size=512, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64)
    adapter = get_adapter(cfg)
    space = SearchSpace(default_space(adapter.dims), adapter, Orders.first_k(adapter.dims))
    assert (64, 1, 3) not in space.attention and (64, 3, 3) not in space.attention
    assert (64, 2, 2) in space.attention  # 4 heads divide 64
    assert (576, 3, 3) in space.attention and (192, 3, 1) in space.attention
    assert all(h % (g * hp) == 0 for h, g, hp in space.attention)
    tables = make_bins(SizeGrid(space), parse_params("30M,60M"), tolerance=0.05)
    rng = random.Random(0)
    for table in tables:
        g = sample(space, table, rng)
        for _ in range(30):
            g = mutate(space, table, g, rng)
            spec = space.to_spec(g)
            assert table.bin.contains(adapter.counts(spec.shape).params)


def test_coarse_importance_genome_matches_from_sizes(teachers):
    teacher, imp = teachers["llama"]
    space = _space(teacher, imp)
    g = space.fit(Genome(layers=3, hidden=48, kv_groups=1, heads_per_group=2, mlp=64))
    want = from_sizes(teacher.dims, layers=3, hidden=48, kv_groups=1, heads_per_group=2, mlp=64,
                                 order="importance", importance=imp)
    assert space.to_spec(g).canonical_json() == want.canonical_json()
    first = SearchSpace(space.config, teacher.adapter, Orders.first_k(teacher.dims))
    want_fk = from_sizes(teacher.dims, layers=3, hidden=48, kv_groups=1, heads_per_group=2, mlp=64)
    assert first.to_spec(g).canonical_json() == want_fk.canonical_json()


def test_depth_modes(teachers):
    teacher, imp = teachers["llama"]
    space = _space(teacher, imp)
    g = space.fit(Genome(layers=2, hidden=64, kv_groups=2, heads_per_group=2, mlp=96, depth="block", block_start=1))
    assert space.layer_ids(g) == (0, 3)
    g = space.fit(Genome(layers=3, hidden=64, kv_groups=2, heads_per_group=2, mlp=96, depth="free",
                         free_layers=(0, 1)))
    assert len(g.free_layers) == 3 and space.layer_ids(g) == g.free_layers
    assert resize((5, 1), (1, 2, 3, 4, 5), 1) == (1,) and resize((5,), (1, 2, 3, 4, 5), 3) == (1, 2, 5)


def test_repair_moves_a_child_back_into_its_bin(teachers):
    teacher, imp = teachers["smollm2"]
    space = _space(teacher, imp)
    tables = make_bins(SizeGrid(space), n_bins=3)
    small = tables[0]
    big = Genome(layers=4, hidden=64, kv_groups=2, heads_per_group=2, mlp=96)  # the whole teacher
    assert not small.contains(big.sizes())
    fixed = repair(space, small, big, random.Random(0), fixed=("mlp",))
    assert small.contains(fixed.sizes()) and fixed.mlp == 96


def test_unreachable_budget_names_the_range(teachers):
    teacher, imp = teachers["llama"]
    grid = SizeGrid(_space(teacher, imp))
    with pytest.raises(ConfigError, match="unreachable: the space reaches"):
        make_bins(grid, parse_params("10B"))
    with pytest.raises(ConfigError, match="unreachable"):
        make_bins(grid, [1000])
    with pytest.raises(ConfigError, match="cannot read the budget .40 apples.; write e.g. 40M"):
        parse_params("40 apples")
    assert parse_params("40M, 1.5B,500k") == [40_000_000, 1_500_000_000, 500_000]


def test_space_that_contradicts_the_teacher(teachers, tmp_path):
    teacher, _ = teachers["llama"]
    path = tmp_path / "space.yaml"
    path.write_text("hidden: {max: 128}\n")
    with pytest.raises(ConfigError, match="larger than the teacher's hidden size"):
        load_space(path, teacher.dims)
    path.write_text("layers: {min: 3, max: 2}\n")
    with pytest.raises(ConfigError, match="min 3 is larger than max 2"):
        load_space(path, teacher.dims)
    path.write_text("hiden: {max: 32}\n")
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        load_space(path, teacher.dims)
    # GPT-NeoX: hidden must equal heads * head_dim; with hidden fixed at 48 and kv groups capped at 2 no
    # shape is legal
    neox, _ = teachers["gpt_neox"]
    path.write_text("hidden: {min: 48, max: 48}\nkv_groups: {max: 2}\n")
    cfg = load_space(path, neox.dims)
    with pytest.raises(ConfigError, match="legal"):
        SearchSpace(cfg, neox.adapter, Orders.first_k(neox.dims))
    path.write_text("hidden: {min: 32, max: 64, step: 32}\ndepth_modes: [top]\ngranularity: fine\n")
    cfg = load_space(path, teacher.dims)
    assert cfg.hidden.values() == (32, 64) and cfg.depth_modes == ("top",) and cfg.granularity == "fine"
