"""Search operators: sample, mutate, cross over and repair genomes inside one bin.

Every operator ends in :func:`repair`, which moves the sizes to a legal point of the bin (see
:class:`~headstart.searching.bins.BinTable`) and makes depth arguments and index picks agree with the
sizes, so the genomes they return are legal specs of the teacher inside the bin.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

from headstart.searching import layerwise
from headstart.searching.bins import BinTable
from headstart.searching.space import SIZE_GENES, Genome, Picks, SearchSpace, swap_one

_TEMPLATE_GENES = ("kv_groups", "heads_per_group", "mlp")  # layer-wise: replaced by per-layer sizes


def _with_sizes(genome: Genome, sizes: tuple[int, ...]) -> Genome:
    return replace(genome, **dict(zip(SIZE_GENES, sizes)))


def repair(space: SearchSpace, table: BinTable, genome: Genome, rng: random.Random,
           fixed: tuple[str, ...] = (), keep: int | None = None) -> Genome:
    """``genome`` moved to the nearest legal size point of the bin (genes in ``fixed`` kept where
    the bin allows), with depth arguments and picks fitted to its sizes; layer-wise, the per-layer
    sizes are then balanced into the bin (teacher layer ``keep`` moving last)."""
    if not table.contains(genome.sizes()):
        genome = _with_sizes(genome, table.nearest(genome.sizes(), rng, fixed))
    genome = space.fit(genome)
    if space.layerwise:
        genome = layerwise.balance(space, table, genome, rng, keep)
        genome = space.fit(genome) if space.fine else genome
    return genome


def sample(space: SearchSpace, table: BinTable, rng: random.Random) -> Genome:
    """A random genome of the bin: uniform size point, uniform depth mode; a ``block`` start is
    uniform, a ``free`` layer set is the order's top layers with one or two random swaps; fine
    picks start at the order."""
    sizes = table.sample(rng)
    depth = rng.choice(space.config.depth_modes)
    genome = space.fit(Genome(*sizes, depth=depth, block_start=rng.randint(0, sizes[0])))
    if depth == "free":
        free = genome.free_layers
        for _ in range(rng.randint(1, 2)):
            free = swap_one(free, space.orders.layers, rng)
        genome = replace(genome, free_layers=free)
    if space.layerwise:  # random per-layer sizes around the template, back into the bin
        genome = repair(space, table, layerwise.perturb(space, genome, rng), rng)
    return genome


def seed_genomes(space: SearchSpace, table: BinTable, rng: random.Random) -> list[Genome]:
    """The first proposals of an evolution run, spanning the bin on purpose (see
    :meth:`~headstart.searching.bins.BinTable.archetypes`): width-only, depth-only, balanced and
    inner-width, each keeping the order's top layers; the rest of the population is drawn at random.
    Layer-wise, each also comes tilted by layer influence (more heads and neurons in high-influence
    layers)."""
    seeds = [space.fit(Genome(*sizes, depth="top")) for sizes in table.archetypes(rng)]
    if space.layerwise:  # the tilted point first: per-layer sizes are what this layout is for
        seeds = [x for g in seeds for x in (repair(space, table, layerwise.tilt(space, g, 0.5), rng), g)]
    return list({json.dumps(g.to_dict(), sort_keys=True): g for g in seeds}.values())


def _genes(space: SearchSpace, genome: Genome) -> list[str]:
    genes = [g for g in SIZE_GENES if len(space.values[g]) > 1 and not (space.layerwise and g in _TEMPLATE_GENES)]
    if space.layerwise:
        genes.append("layer_sizes")
    if len(space.config.depth_modes) > 1 or genome.depth != "top":
        genes.append("depth")
    if space.fine:
        genes.append("picks")
    return genes


def _step(values: tuple[int, ...], current: int, rng: random.Random) -> int:
    """A nearby value (one or two steps) most of the time, a uniform one sometimes."""
    if rng.random() < 0.2:
        return rng.choice(values)
    i = min(range(len(values)), key=lambda k: abs(values[k] - current))
    delta = rng.choice((-2, -1, -1, 1, 1, 2))
    return values[min(max(i + delta, 0), len(values) - 1)]


def _mutate_depth(space: SearchSpace, genome: Genome, rng: random.Random) -> Genome:
    modes = space.config.depth_modes
    if len(modes) > 1 and (genome.depth == "top" or rng.random() < 0.4):
        depth = rng.choice([m for m in modes if m != genome.depth])
        return space.fit(replace(genome, depth=depth, block_start=rng.randint(0, genome.layers),
                                 free_layers=space.layer_ids(genome)))
    if genome.depth == "block":
        return replace(genome, block_start=min(max(genome.block_start + rng.choice((-2, -1, 1, 2)), 0), genome.layers))
    if genome.depth == "free":
        return replace(genome, free_layers=swap_one(genome.free_layers, space.orders.layers, rng))
    return genome


def _mutate_picks(space: SearchSpace, genome: Genome, rng: random.Random) -> Genome:
    """Swap one kept index for a dropped one in one component (of a kept layer)."""
    p, o, d = genome.picks, space.orders, space.dims
    assert p is not None  # fine genomes always carry picks (space.fit)
    t = rng.choice(space.layer_ids(genome))
    options = [name for name, size, full in (
        ("hidden", genome.hidden, d.hidden_size), ("kv", genome.kv_groups, d.num_key_value_heads),
        ("heads", genome.heads_per_group, d.heads_per_group), ("mlp", genome.mlp, d.intermediate_size),
    ) if size < full]
    if not options:
        return genome
    name = rng.choice(options)
    if name == "hidden":
        p = replace(p, hidden=swap_one(p.hidden, o.hidden, rng))
    elif name == "kv":
        p = replace(p, kv=_set(p.kv, t, swap_one(p.kv[t], o.kv[t], rng)))
    elif name == "heads":
        grp = rng.choice(p.kv[t])
        layer = _set(p.heads[t], grp, swap_one(p.heads[t][grp], o.heads[t][grp], rng))
        p = replace(p, heads=_set(p.heads, t, layer))
    else:
        p = replace(p, mlp=_set(p.mlp, t, swap_one(p.mlp[t], o.mlp[t], rng)))
    return replace(genome, picks=p)


def _set(items: tuple, i: int, value: object) -> tuple:
    return (*items[:i], value, *items[i + 1:])


def mutate(space: SearchSpace, table: BinTable, genome: Genome, rng: random.Random) -> Genome:
    """Change each gene with probability 1/#genes (at least one): a size by a step or two, the
    depth choice, or one index swap (fine granularity); then repair into the bin."""
    genes = _genes(space, genome)
    chosen = [g for g in genes if rng.random() < 1.0 / len(genes)] or [rng.choice(genes)]
    child, moved, layer = genome, [], None
    for gene in chosen:
        if gene in SIZE_GENES:
            child = replace(child, **{gene: _step(space.values[gene], getattr(child, gene), rng)})
            moved.append(gene)
        elif gene == "depth":
            child = _mutate_depth(space, child, rng)
        elif gene == "layer_sizes":
            child, layer = layerwise.mutate_layer(space, space.fit(child), rng)
        else:
            child = _mutate_picks(space, child, rng)
    return repair(space, table, child, rng, fixed=tuple(moved), keep=layer)


def crossover(space: SearchSpace, table: BinTable, a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Uniform crossover: every size, the depth choice (as one gene) and every per-layer pick set
    comes from either parent with equal chance; then repair into the bin."""
    def pick(x, y):
        return x if rng.random() < 0.5 else y

    sizes = {g: pick(getattr(a, g), getattr(b, g)) for g in SIZE_GENES}
    depth_from = pick(a, b)
    picks = None
    if a.picks is not None and b.picks is not None:
        pa, pb = a.picks, b.picks
        picks = Picks(
            hidden=pick(pa.hidden, pb.hidden),
            kv=tuple(pick(x, y) for x, y in zip(pa.kv, pb.kv)),
            heads=tuple(pick(x, y) for x, y in zip(pa.heads, pb.heads)),
            mlp=tuple(pick(x, y) for x, y in zip(pa.mlp, pb.mlp)),
        )
    layer_sizes = tuple(pick(x, y) for x, y in zip(a.layer_sizes, b.layer_sizes))  # per teacher layer
    child = Genome(**sizes, depth=depth_from.depth, block_start=depth_from.block_start,
                   free_layers=depth_from.free_layers, picks=picks, layer_sizes=layer_sizes)
    return repair(space, table, child, rng)
