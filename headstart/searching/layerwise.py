"""Search operators on per-layer sizes (layout ``layer-wise``).

A layer-wise genome carries, per teacher layer, its own (kv groups, heads per group, MLP size),
snapped to the space's values. Mutation steps one size of one kept layer; :func:`balance` then
moves sizes of the other kept layers, one step at a time, until the parameter count is inside the
bin again: it shrinks the least influential layers first and grows the most influential first
(block influence, the order's layer ranking). When that cannot reach the bin, the genome falls back
to its uniform template, which the bin table put inside the bin.
"""

from __future__ import annotations

import random
from dataclasses import replace

from headstart.searching.bins import BinTable
from headstart.searching.space import Genome, SearchSpace

LayerSize = tuple[int, int, int]  # (kv_groups, heads_per_group, mlp)


def _neighbour(space: SearchSpace, hidden: int, size: LayerSize, direction: int, rng: random.Random,
               parts: tuple[int, ...] = (0, 1, 2)) -> LayerSize:
    """``size`` with one of its parts moved by one step of the space in ``direction`` (+1 / -1)."""
    kv, hp, m = size
    options = []
    for part in parts:
        if part == 2:
            values = space.values["mlp"]
            i = values.index(m) + direction
            if 0 <= i < len(values):
                options.append((kv, hp, values[i]))
            continue
        here = (kv, hp)
        same = [o for o in space.heads_of[hidden]
                if o[1 - part] == here[1 - part] and (o[part] - here[part]) * direction > 0]
        if same:
            options.append((*min(same, key=lambda o: abs(o[part] - here[part])), m))
    return rng.choice(options) if options else size


def _params(space: SearchSpace, genome: Genome) -> int:
    return space.adapter.counts(space.shape(genome)).params


def _set(sizes: tuple[LayerSize, ...], t: int, value: LayerSize) -> tuple[LayerSize, ...]:
    return (*sizes[:t], value, *sizes[t + 1:])


def balance(space: SearchSpace, table: BinTable, genome: Genome, rng: random.Random,
            keep: int | None = None) -> Genome:
    """``genome`` with per-layer sizes moved until its parameter count lies in the bin (teacher layer
    ``keep``, just mutated, moves last); the uniform template when that fails."""
    rank = {t: i for i, t in enumerate(space.orders.layers)}
    kept = sorted(space.layer_ids(genome), key=rank.__getitem__)  # most influential first
    lo, hi = table.bin.lo, table.bin.hi
    for _ in range(8 * len(kept) * len(space.values["mlp"])):
        params = _params(space, genome)
        if lo <= params <= hi:
            return genome
        direction = 1 if params < lo else -1
        order = kept if direction > 0 else kept[::-1]
        order = [t for t in order if t != keep] + ([keep] if keep in order else [])
        moved = False
        for t in order[: max(1, len(order) // 2)] if rng.random() < 0.8 else order:
            size = _neighbour(space, genome.hidden, genome.layer_sizes[t], direction, rng)
            if size != genome.layer_sizes[t]:
                genome = replace(genome, layer_sizes=_set(genome.layer_sizes, t, size))
                moved = True
                break
        if not moved:
            break
    return space.fit(replace(genome, layer_sizes=()))  # the template (in the bin) in every layer


def mutate_layer(space: SearchSpace, genome: Genome, rng: random.Random) -> tuple[Genome, int]:
    """One kept layer's attention or MLP size moved by a step or two; returns the genome and the layer."""
    t = rng.choice(space.layer_ids(genome))
    size = genome.layer_sizes[t]
    for _ in range(rng.choice((1, 1, 2))):
        size = _neighbour(space, genome.hidden, size, rng.choice((-1, 1)), rng, parts=(rng.choice((0, 1, 2)),))
    return replace(genome, layer_sizes=_set(genome.layer_sizes, t, size)), t


def tilt(space: SearchSpace, genome: Genome, strength: float) -> Genome:
    """Importance-guided per-layer sizes: the most influential kept layer keeps ``1 + strength`` times
    the template's heads and MLP, the least influential ``1 - strength`` times, linearly between."""
    kept = [t for t in space.orders.layers if t in set(space.layer_ids(genome))]
    sizes = list(genome.layer_sizes)
    for r, t in enumerate(kept):
        f = 1 + strength * (1 - 2 * r / max(1, len(kept) - 1))
        kv, hp, m = sizes[t]
        sizes[t] = space.snap_layer(genome.hidden, (round(kv * f), hp, round(m * f)))
    return replace(genome, layer_sizes=tuple(sizes))


def perturb(space: SearchSpace, genome: Genome, rng: random.Random) -> Genome:
    """Random per-layer sizes around the template: every kept layer moves a few steps either way."""
    sizes = list(genome.layer_sizes)
    for t in space.layer_ids(genome):
        for _ in range(rng.randint(0, 3)):
            sizes[t] = _neighbour(space, genome.hidden, sizes[t], rng.choice((-1, 1)), rng)
    return replace(genome, layer_sizes=tuple(sizes))
