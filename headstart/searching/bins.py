"""Parameter budgets ("bins") and the legal size points of a space inside each.

Sizes are enumerated once as a grid: every legal (hidden, kv groups, heads per group) combination
times every MLP size gives a parameter count that is linear in the number of layers,
``base + layers * per_layer`` (both from ``adapter.counts``, so counting is the adapter's). A bin
keeps the points of the grid whose count falls in it; sampling, membership and the repair that
moves a child back into its bin all work on those points, so a candidate never leaves its bin.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass

import numpy as np

from headstart.errors import ConfigError
from headstart.searching.space import SIZE_GENES as GENES
from headstart.searching.space import SearchSpace
from headstart.spec import Shape

log = logging.getLogger(__name__)

Sizes = tuple[int, int, int, int, int]  # (layers, hidden, kv_groups, heads_per_group, mlp)
def format_params(n: float) -> str:
    """``40123456`` -> ``"40.1M"``."""
    for unit, scale in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


@dataclass(frozen=True)
class Bin:
    """A parameter range ``[lo, hi]`` (inclusive); ``target`` is the budget it was made from."""

    index: int
    lo: int
    hi: int
    target: int | None = None

    @property
    def label(self) -> str:
        """A short name usable in file names: ``bin0-40M`` or ``bin1-38M-42M``."""
        if self.target is not None:
            return f"bin{self.index}-{format_params(self.target)}"
        return f"bin{self.index}-{format_params(self.lo)}-{format_params(self.hi)}"

    def contains(self, params: int) -> bool:
        """Whether ``params`` falls in the bin."""
        return self.lo <= params <= self.hi

    def to_dict(self) -> dict:
        """Plain data for journals and summaries."""
        return {"index": self.index, "lo": self.lo, "hi": self.hi, "target": self.target, "label": self.label}


class SizeGrid:
    """Every legal size point of a space with its parameter count."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        v = space.values
        combos = [(h, g, hp, m) for (h, g, hp) in space.attention for m in v["mlp"]]
        self.combos = np.array(combos, dtype=np.int64)  # [C, 4]: hidden, kv_groups, heads_per_group, mlp
        base, per = [], []
        for h, g, hp, m in combos:
            p0 = space.adapter.counts(Shape.of(0, h, g, hp, m)).params
            p1 = space.adapter.counts(Shape.of(1, h, g, hp, m)).params
            base.append(p0)
            per.append(p1 - p0)
        self.layers = np.array(v["layers"], dtype=np.int64)  # [NL]
        self.params = np.array(base, dtype=np.int64)[:, None] + np.array(per, dtype=np.int64)[:, None] * self.layers
        # positions of each gene value in its value list, for distances: [C, 4]
        self.pos = np.stack([
            np.searchsorted(np.array(v[name]), self.combos[:, i]) for i, name in
            enumerate(("hidden", "kv_groups", "heads_per_group", "mlp"))
        ], axis=1)
        self.scale = np.array([max(1, len(v[n]) - 1) for n in GENES], dtype=np.float64)
        self.index = {tuple(int(x) for x in c): i for i, c in enumerate(self.combos)}

    @property
    def min_params(self) -> int:
        """The smallest parameter count of the space."""
        return int(self.params.min())

    @property
    def max_params(self) -> int:
        """The largest parameter count of the space."""
        return int(self.params.max())

    def params_of(self, sizes: Sizes) -> int | None:
        """Parameter count of a legal size point (``None`` if the point is not in the space)."""
        c = self.index.get(tuple(sizes[1:]))
        hits = np.nonzero(self.layers == sizes[0])[0]
        if c is None or len(hits) == 0:
            return None
        return int(self.params[c, hits[0]])


class BinTable:
    """The size points of a grid inside one bin: sampling, membership, nearest point."""

    def __init__(self, grid: SizeGrid, bin: Bin) -> None:
        self.grid = grid
        self.bin = bin
        self.mask = (grid.params >= bin.lo) & (grid.params <= bin.hi)  # [C, NL]
        self.points = np.argwhere(self.mask)  # [P, 2]: combo index, layer index
        if len(self.points) == 0:
            raise ConfigError(f"no size point of the space falls in {bin.label}")

    def __len__(self) -> int:
        return len(self.points)

    def sizes_at(self, c: int, li: int) -> Sizes:
        """The sizes of grid point (combo ``c``, layer index ``li``)."""
        h, g, hp, m = (int(x) for x in self.grid.combos[c])
        return (int(self.grid.layers[li]), h, g, hp, m)

    def sample(self, rng: random.Random) -> Sizes:
        """A size point of the bin, uniformly."""
        c, li = self.points[rng.randrange(len(self.points))]
        return self.sizes_at(int(c), int(li))

    def contains(self, sizes: Sizes) -> bool:
        """Whether ``sizes`` is a legal point of the space inside this bin."""
        c = self.grid.index.get(tuple(sizes[1:]))
        hits = np.nonzero(self.grid.layers == sizes[0])[0]
        return c is not None and len(hits) > 0 and bool(self.mask[c, hits[0]])

    def nearest(self, sizes: Sizes, rng: random.Random, fixed: tuple[str, ...] = ()) -> Sizes:
        """The bin's point closest to ``sizes`` (L1 over value-list positions, each gene scaled to
        its range); genes named in ``fixed`` keep their value if any point of the bin allows it.
        Ties are broken with ``rng``."""
        grid, v = self.grid, self.grid.space.values
        want = np.array([_pos(v[n], s) for n, s in zip(GENES, sizes)], dtype=np.float64)
        pts = self.points
        cand = np.concatenate([pts[:, 1:2], grid.pos[pts[:, 0]]], axis=1).astype(np.float64)  # [P, 5]
        keep = np.ones(len(pts), dtype=bool)
        for name in fixed:
            i = GENES.index(name)
            sel = keep & (cand[:, i] == want[i])
            if sel.any():
                keep = sel
        dist = (np.abs(cand - want) / grid.scale).sum(axis=1)
        dist[~keep] = np.inf
        best = np.flatnonzero(dist <= dist.min() + 1e-12)
        c, li = pts[best[rng.randrange(len(best))]]
        return self.sizes_at(int(c), int(li))


    def archetypes(self, rng: random.Random) -> list[Sizes]:
        """Points that span the bin on purpose: width-only (the most layers, widths cut), depth-only
        (full widths, layers cut), balanced (every size at the same share of its range) and
        inner-width (every layer kept with its full hidden size and heads per group; whole query
        groups and MLP neurons cut, balanced: the cut that keeps each layer's interface)."""
        full = tuple(max(self.grid.space.values[n]) for n in GENES)
        width_only = self.nearest(full, rng, fixed=("layers",))
        depth_only = self.nearest(full, rng, fixed=GENES[1:])
        balanced = self._balanced(rng)
        inner = self._balanced(rng, full=("hidden", "heads_per_group", "layers"))
        return list(dict.fromkeys([width_only, depth_only, balanced, inner]))

    def _balanced(self, rng: random.Random, full: tuple[str, ...] = ()) -> Sizes:
        """The bin's point whose free genes sit at the most equal shares of their ranges; each gene
        in ``full`` is first held at the largest value the bin allows (in that order)."""
        cand = np.concatenate([self.points[:, 1:2], self.grid.pos[self.points[:, 0]]], axis=1).astype(np.float64)
        share = cand / np.maximum(1, self.grid.scale)  # each gene's position as a share of its range
        v = self.grid.space.values
        keep = np.ones(len(cand), dtype=bool)
        free = [i for i, n in enumerate(GENES) if n not in full and len(v[n]) > 1]  # a one-value gene has no share
        for name in full:
            i = GENES.index(name)
            keep &= cand[:, i] == cand[keep, i].max()
        spread = share[:, free].max(axis=1) - share[:, free].min(axis=1)
        spread[~keep] = np.inf
        best = np.flatnonzero(spread <= spread.min() + 1e-12)
        c, li = self.points[best[rng.randrange(len(best))]]
        return self.sizes_at(int(c), int(li))


def _pos(values: tuple[int, ...], x: int) -> int:
    """Position of ``x`` in ``values`` (of the nearest value if ``x`` is absent)."""
    return int(np.argmin(np.abs(np.array(values) - x)))


def make_bins(
    grid: SizeGrid, budgets: list[int] | None = None, tolerance: float = 0.05, n_bins: int | None = None
) -> list[BinTable]:
    """Bins from budgets (each ``±tolerance``) or ``n_bins`` equal-width bins over the space's range.

    A budget no point of the space reaches is refused, naming the reachable range.
    """
    lo_all, hi_all = grid.min_params, grid.max_params
    reach = f"the space reaches {format_params(lo_all)}–{format_params(hi_all)} parameters"
    if budgets:
        if not 0 <= tolerance < 1:
            raise ConfigError(f"tolerance {tolerance} must be in [0, 1)")
        tables = []
        for i, b in enumerate(budgets):
            bin = Bin(i, math.floor(b * (1 - tolerance)), math.ceil(b * (1 + tolerance)), target=b)
            if bin.hi < lo_all or bin.lo > hi_all:
                raise ConfigError(f"budget {format_params(b)} (±{tolerance:.0%}) is unreachable: {reach}")
            if not ((grid.params >= bin.lo) & (grid.params <= bin.hi)).any():
                raise ConfigError(
                    f"no shape of the space has {format_params(bin.lo)}–{format_params(bin.hi)} parameters "
                    f"(budget {format_params(b)}); raise --tolerance or use finer steps ({reach})"
                )
            tables.append(BinTable(grid, bin))
        return tables
    if not n_bins or n_bins < 1:
        raise ConfigError("give parameter budgets (--params 40M,60M) or a number of bins (--bins N)")
    edges = np.linspace(lo_all, hi_all, n_bins + 1)
    tables = []
    for i in range(n_bins):
        lo = int(math.ceil(edges[i])) if i else lo_all
        hi = int(math.floor(edges[i + 1])) if i < n_bins - 1 else hi_all
        hi = hi if i == n_bins - 1 else min(hi, int(math.ceil(edges[i + 1])) - 1)
        bin = Bin(len(tables), lo, hi)
        if ((grid.params >= lo) & (grid.params <= hi)).any():
            tables.append(BinTable(grid, bin))
        else:
            log.warning("no shape of the space has %s–%s parameters; that bin is skipped",
                        format_params(lo), format_params(hi))
    return tables
