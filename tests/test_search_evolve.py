"""Evolution on a synthetic fitness: finds a planted optimum, never re-evaluates, resumes exactly."""

from __future__ import annotations

import json
import random

import pytest
from transformers import LlamaConfig

from headstart.config.search import EvolutionConfig
from headstart.config.search import budgets as parse_params
from headstart.errors import CheckpointError
from headstart.models import get_adapter
from headstart.searching.bins import SizeGrid, make_bins
from headstart.searching.evolve import Evaluator, run_search
from headstart.searching.journal import Journal, read_journal
from headstart.searching.space import SearchSpace, default_space
from headstart.selection import Orders

VALUE_GENES = ("layers", "hidden", "kv_groups", "heads_per_group", "mlp")


@pytest.fixture(scope="module")
def space():
    # a mid-sized GQA shape (no weights needed: the synthetic fitness reads sizes only)
    cfg = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=2048, num_hidden_layers=24,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=64)
    adapter = get_adapter(cfg)
    return SearchSpace(default_space(adapter.dims), adapter, Orders.first_k(adapter.dims))


def _planted(space, table, seed=123):
    target = table.sample(random.Random(seed))
    values = space.values

    def fitness(spec):
        sh = spec.shape
        sizes = (sh.num_hidden_layers, sh.hidden_size, sh.num_key_value_heads, sh.heads_per_group, sh.intermediate_size)
        dist = sum(abs(values[g].index(s) - values[g].index(t)) for g, s, t in zip(VALUE_GENES, sizes, target))
        return float(dist) + (0.0 if spec.layers == tuple(range(spec.num_hidden_layers)) else 0.5)

    return target, fitness


def _counter(space):
    def count(spec):
        c = space.adapter.counts(spec.shape)
        return c.params, c.flops_per_token
    return count


def test_evolution_finds_a_planted_optimum(space):
    tables = make_bins(SizeGrid(space), parse_params("20M"), tolerance=0.1)
    assert len(tables[0]) > 1000  # a haystack: random search is unlikely to hit the needle
    found = 0
    for seed in range(3):
        target, fitness = _planted(space, tables[0], seed=100 + seed)
        evaluator = Evaluator(fitness, _counter(space))
        settings = EvolutionConfig(strategy="evolution", population=8, evaluations=150)
        [state] = run_search(space, tables, evaluator, settings, seed, "evolution/first-k")
        best = state.best
        assert len(state.candidates) == 150 and evaluator.computed == 150  # never evaluated twice
        found += best.loss == 0.0 and best.genome.sizes() == target
    assert found == 3
    # the same budget of random sampling does far worse
    target, fitness = _planted(space, tables[0], seed=100)
    [rand] = run_search(space, tables, Evaluator(fitness, _counter(space)),
                        EvolutionConfig(strategy="random", evaluations=150), 0, "random/first-k")
    assert rand.best.loss >= 2.0


def _run(space, tables, journal, fitness, evaluations=30):
    evaluator = Evaluator(fitness, _counter(space), journal)
    out = []
    for strategy in ("evolution", "random"):
        settings = EvolutionConfig(strategy=strategy, population=4, evaluations=evaluations)
        out.append(run_search(space, tables, evaluator, settings, 7, f"{strategy}/first-k"))
    return evaluator, out


def _trace(path):
    _, records, _ = read_journal(path)
    return [(r["run"], r["bin"], r["n"], r["spec_hash"], r["loss"]) for r in records]


class Killed(RuntimeError):
    pass


def test_resume_after_a_kill_reproduces_the_uninterrupted_journal(space, tmp_path):
    tables = make_bins(SizeGrid(space), n_bins=2)
    _, fitness = _planted(space, tables[0])
    header = {"teacher": "t", "data": "d", "space": "s", "seed": 7}
    with Journal(tmp_path / "full.jsonl", header) as j:
        full_evaluator, _ = _run(space, tables, j, fitness)

    calls = {"n": 0}

    def dying(spec):
        calls["n"] += 1
        if calls["n"] > 45:  # dies inside the evolution run, after 45 evaluations
            raise Killed
        return fitness(spec)

    path = tmp_path / "resumed.jsonl"
    with pytest.raises(Killed), Journal(path, header) as j:
        _run(space, tables, j, dying)
    # generations of 4 per bin, 2 bins: the five whole generations are journaled, the one in flight is lost
    assert len(_trace(path)) == 40
    with path.open("a") as f:
        f.write('{"run": "evolution/first-k", "bin": 0, "spec')  # a line cut off by the kill
    with pytest.raises(CheckpointError, match="--resume"):
        Journal(path, header)
    with Journal(path, header, resume=True) as j:
        assert j.skipped == 1
        evaluator, states = _run(space, tables, j, fitness)
    assert evaluator.computed == full_evaluator.computed - 40  # nothing the journal held was evaluated again
    assert _trace(path) == _trace(tmp_path / "full.jsonl")
    assert (tmp_path / "resumed.jsonl.corrupt").read_text().startswith('{"run"')
    _, full = _run(space, tables, None, fitness)
    assert [s.best.spec_hash for run in states for s in run] == [s.best.spec_hash for run in full for s in run]


def test_resume_refuses_another_teacher_data_space_or_seed(tmp_path):
    header = {"teacher": "t", "data": "d", "space": "s", "seed": 7}
    with Journal(tmp_path / "j.jsonl", header):
        pass
    for key in ("teacher", "data", "space", "seed"):
        other = {**header, key: "other"}
        with pytest.raises(CheckpointError, match=f"another {key}"):
            Journal(tmp_path / "j.jsonl", other, resume=True)
    (tmp_path / "x.jsonl").write_text("not json\n")
    with pytest.raises(CheckpointError, match="not a headstart search journal"):
        Journal(tmp_path / "x.jsonl", header, resume=True)


def test_journal_lines_hold_what_the_issue_asks(space, tmp_path):
    tables = make_bins(SizeGrid(space), n_bins=1)
    _, fitness = _planted(space, tables[0])
    with Journal(tmp_path / "j.jsonl", {"teacher": "t", "data": "d", "space": "s", "seed": 0}) as j:
        _run(space, tables, j, fitness, evaluations=3)
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    header, first = json.loads(lines[0]), json.loads(lines[1])
    assert header["kind"] == "headstart-search-journal" and len(lines) == 7
    for key in ("genome", "sizes", "layers", "params", "flops", "loss", "seconds", "bin", "strategy", "order"):
        assert key in first
    assert first["params"] == space.adapter.counts(space.to_spec(_genome(first)).shape).params


def _genome(record):
    from headstart.searching.space import Genome

    return Genome.from_dict(record["genome"])


def test_time_limit_and_exhausted_space_stop_the_search(space):
    tables = make_bins(SizeGrid(space), n_bins=1)
    _, fitness = _planted(space, tables[0])
    [state] = run_search(space, tables, Evaluator(fitness, _counter(space)),
                         EvolutionConfig(evaluations=50, time_limit=1e-9), 0, "evolution/first-k")
    assert state.candidates == [] and state.best is None
    # a space with very few points: the search stops when no unseen candidate is left
    from headstart.searching.space import IntRange, SpaceDefinition

    small = SpaceDefinition(layers=IntRange(1, 2), hidden=IntRange(512, 512), kv_groups=IntRange(4, 4),
                        heads_per_group=IntRange(2, 2), mlp=IntRange(1984, 2048, 64), depth_modes=("top",))
    tiny_space = SearchSpace(small, space.adapter, space.orders)
    tables = make_bins(SizeGrid(tiny_space), n_bins=1)
    evaluator = Evaluator(fitness, _counter(tiny_space))
    [state] = run_search(tiny_space, tables, evaluator, EvolutionConfig(evaluations=50, population=2), 0,
                         "evolution/first-k", max_redraws=20)
    assert state.exhausted and len(state.candidates) == evaluator.computed == 4


def test_the_seeded_population_spans_the_bin_and_is_legal(space):
    from headstart.searching.operators import seed_genomes

    tables = make_bins(SizeGrid(space), parse_params("20M,40M"), tolerance=0.1)
    full = {g: max(space.values[g]) for g in VALUE_GENES}
    for table in tables:
        seeds = seed_genomes(space, table, random.Random(0))
        assert 2 <= len(seeds) <= 4
        for genome in seeds:
            spec = space.to_spec(genome)  # validated by the family's adapter
            assert table.contains(genome.sizes()) and table.bin.contains(space.adapter.counts(spec.shape).params)
        points = [table.sizes_at(int(c), int(li)) for c, li in table.points]
        width_only, depth_only = seeds[0], seeds[1]
        assert width_only.layers == full["layers"] or width_only.layers == max(s[0] for s in points)
        assert depth_only.hidden == full["hidden"] or depth_only.mlp == full["mlp"]
        # inner-width: the widest hidden, then the most heads per group, then the most layers the bin allows
        for i in (1, 3, 0):  # hidden, heads_per_group, layers
            points = [s for s in points if s[i] == max(p[i] for p in points)]
        inner = {(g.hidden, g.heads_per_group, g.layers) for g in seeds}
        assert (points[0][1], points[0][3], points[0][0]) in inner
    # evolution's first proposals are exactly these points
    target, fitness = _planted(space, tables[0])
    [state] = run_search(space, tables[:1], Evaluator(fitness, _counter(space)),
                         EvolutionConfig(strategy="evolution", population=6, evaluations=6), 3, "evolution/first-k")
    want = [g.sizes() for g in seed_genomes(space, tables[0], random.Random("3:evolution/first-k:0"))]
    assert [c.genome.sizes() for c in state.candidates[:len(want)]] == want


class _Scored:
    """A synthetic fitness that supports early abandonment (sizes -> loss; the partial loss is exact)."""

    abandons = True

    def __init__(self, inner):
        self.inner, self.abandoned, self.calls = inner, False, []

    def __call__(self, spec, threshold=None):
        loss = self.inner(spec)
        self.calls.append(threshold)
        self.abandoned = threshold is not None and loss > threshold + 0.1
        return loss


def test_abandoned_candidates_are_journaled_and_never_reused(space, tmp_path):
    tables = make_bins(SizeGrid(space), parse_params("20M"), tolerance=0.1)
    _, inner = _planted(space, tables[0])
    fitness = _Scored(inner)
    with Journal(tmp_path / "j.jsonl", {"teacher": "t", "data": "d", "space": "s", "seed": 0, "search": {}}) as j:
        evaluator = Evaluator(fitness, _counter(space), j)
        [state] = run_search(space, tables, evaluator, EvolutionConfig(population=4, evaluations=30), 1,
                             "evolution/first-k")
    assert fitness.calls[:4] == [None] * 4  # no threshold until the population is full
    assert any(t is not None for t in fitness.calls[4:])
    # generations of 4 (the population): one threshold per generation, fixed at its start
    assert all(len(set(fitness.calls[g:g + 4])) == 1 for g in range(0, 28, 4))
    _, records, _ = read_journal(tmp_path / "j.jsonl")
    abandoned = [r for r in records if r["abandoned"]]
    assert abandoned and all(c.loss > min(p.loss for p in state.population) for c in state.candidates
                             if c.abandoned)
    assert not any(r["spec_hash"] in evaluator.losses for r in abandoned)


def test_aging_evolution_keeps_the_newest_members(space):
    tables = make_bins(SizeGrid(space), parse_params("20M"), tolerance=0.1)
    _, fitness = _planted(space, tables[0])
    [state] = run_search(space, tables, Evaluator(fitness, _counter(space)),
                         EvolutionConfig(population=4, evaluations=20, aging=True), 2, "evolution/first-k")
    assert [c.spec_hash for c in state.population] == [c.spec_hash for c in state.candidates[-4:]]
