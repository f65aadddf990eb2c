"""The search space: which sub-network shapes the search may visit, and the genome that encodes one.

A :class:`SpaceDefinition` (YAML, defaults derived from the teacher) gives each size a range with a
step, the depth modes, and the granularity. A :class:`SearchSpace` binds it to a teacher's adapter
and an index order (importance or first-k) and turns a :class:`Genome` into a
:class:`~headstart.spec.SubnetSpec`.

Legality is by construction: the (hidden, kv groups, heads per group) combinations the family's
config accepts are enumerated once (``adapter.validate`` decides), and every genome the search
operators produce uses one of them; ``adapter.validate`` checks each spec again before it is used.

Depth modes: ``top`` keeps the first ``n`` layers of the order (block influence, or the prefix in
first-k order), ``block`` removes one contiguous block of ``L - n`` layers, ``free`` keeps any
subset. Granularity ``coarse`` takes every index from the order; ``fine`` also carries explicit
index choices per teacher layer (:class:`Picks`), which mutation changes by swaps. Layout
``uniform`` gives every layer the genome's sizes; ``layer-wise`` also carries, per teacher layer,
its own (kv groups, heads per group, MLP size), snapped to the space's values (see
:mod:`headstart.searching.layerwise`); the uniform sizes are then the template those start from.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from headstart.config.fields import check_keys, read_yaml
from headstart.config.search import GRANULARITIES, LAYOUTS
from headstart.errors import ConfigError, SpecError
from headstart.models import ModelAdapter
from headstart.selection import Orders, from_sizes, pick
from headstart.spec import LayerSizes, Shape, SubnetSpec, TeacherDims

DEPTH_MODES: tuple[str, ...] = ("top", "block", "free")
SIZE_GENES: tuple[str, ...] = ("layers", "hidden", "kv_groups", "heads_per_group", "mlp")


@dataclass(frozen=True)
class IntRange:
    """Integers ``min, min+step, …`` up to ``max``."""

    min: int
    max: int
    step: int = 1

    def values(self) -> tuple[int, ...]:
        """Every value of the range, ascending."""
        return tuple(range(self.min, self.max + 1, self.step))


@dataclass(frozen=True)
class SpaceDefinition:
    """A search space as the user writes it (see ``default_space`` and ``load_space``)."""

    layers: IntRange
    hidden: IntRange
    kv_groups: IntRange
    heads_per_group: IntRange
    mlp: IntRange
    depth_modes: tuple[str, ...] = DEPTH_MODES
    granularity: str = "coarse"
    layout: str = "uniform"

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``space.yaml`` (``layout`` only when layer-wise, so that uniform
        spaces keep their fingerprints)."""
        out = asdict(self)
        out["depth_modes"] = list(self.depth_modes)
        if self.layout == "uniform":
            out.pop("layout")
        return out

    def fingerprint(self) -> str:
        """A short hash of the space (journals refuse to resume across spaces)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _default_step(size: int, preferred: int = 64) -> int:
    """The largest power of two <= ``preferred`` dividing ``size`` with at least 4 steps in it."""
    step = preferred
    while step > 1 and (size % step or size // step < 4):
        step //= 2
    return step


def default_space(dims: TeacherDims, granularity: str = "coarse", layout: str = "uniform") -> SpaceDefinition:
    """The full space of a teacher: every size from one step up to the teacher's, widths snapped
    to multiples of 64 where the teacher allows (smaller powers of two for tiny teachers)."""
    hs, ms = _default_step(dims.hidden_size), _default_step(dims.intermediate_size)
    return SpaceDefinition(
        layers=IntRange(1, dims.num_hidden_layers),
        hidden=IntRange(hs, dims.hidden_size, hs),
        kv_groups=IntRange(1, dims.num_key_value_heads),
        heads_per_group=IntRange(1, dims.heads_per_group),
        mlp=IntRange(ms, dims.intermediate_size, ms),
        granularity=granularity,
        layout=layout,
    )


_LIMITS = {
    "layers": ("num_hidden_layers", "layers"),
    "hidden": ("hidden_size", "hidden size"),
    "kv_groups": ("num_key_value_heads", "key/value groups"),
    "heads_per_group": ("heads_per_group", "query heads per group"),
    "mlp": ("intermediate_size", "MLP size"),
}


def load_space(path: str | Path | None, dims: TeacherDims, granularity: str | None = None,
               layout: str | None = None) -> SpaceDefinition:
    """Read a space YAML over the teacher's defaults and check it against the teacher.

    Keys: ``layers``, ``hidden``, ``kv_groups``, ``heads_per_group``, ``mlp`` (each a mapping with
    ``min``/``max``/``step``, any of them optional), ``depth_modes``, ``granularity`` and ``layout``.
    ``granularity`` and ``layout`` (if given) override the file's.
    """
    base = default_space(dims)
    data: dict[str, Any] = {}
    if path is not None:
        data = check_keys(read_yaml(path, "search space"), [*SIZE_GENES, "depth_modes", "granularity", "layout"],
                          str(path))
    values: dict[str, Any] = {}
    for name in SIZE_GENES:
        given = data.get(name, {}) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"space key {name!r} must be a mapping with min/max/step, got {given!r}")
        unknown = set(given) - {"min", "max", "step"}
        if unknown:
            raise ConfigError(f"space key {name!r} has unknown field(s) {sorted(unknown)}; use min, max, step")
        default = getattr(base, name)
        try:
            rng = IntRange(*(int(given.get(k, getattr(default, k))) for k in ("min", "max", "step")))
        except (TypeError, ValueError):
            raise ConfigError(f"space key {name!r} needs integer min/max/step, got {given!r}") from None
        _check_range(name, rng, getattr(dims, _LIMITS[name][0]))
        values[name] = rng
    modes = tuple(data.get("depth_modes", base.depth_modes))
    bad = [m for m in modes if m not in DEPTH_MODES]
    if bad or not modes:
        raise ConfigError(f"depth_modes {list(modes)} invalid; choose from {', '.join(DEPTH_MODES)}")
    gran = granularity or data.get("granularity", base.granularity)
    if gran not in GRANULARITIES:
        raise ConfigError(f"granularity {gran!r} invalid; use one of {', '.join(GRANULARITIES)}")
    lay = layout or data.get("layout", base.layout)
    if lay not in LAYOUTS:
        raise ConfigError(f"layout {lay!r} invalid; use one of {', '.join(LAYOUTS)}")
    return SpaceDefinition(**values, depth_modes=modes, granularity=gran, layout=lay)


def _check_range(name: str, rng: IntRange, limit: int) -> None:
    what = _LIMITS[name][1]
    if rng.step < 1 or rng.min < 1:
        raise ConfigError(f"space {name}: min and step must be at least 1, got min={rng.min}, step={rng.step}")
    if rng.min > rng.max:
        raise ConfigError(f"space {name}: min {rng.min} is larger than max {rng.max}")
    if rng.max > limit:
        raise ConfigError(f"space {name}: max {rng.max} is larger than the teacher's {what} ({limit}); lower it")


@dataclass(frozen=True)
class Picks:
    """Fine granularity: the kept indices themselves (sorted), per teacher layer where per-layer."""

    hidden: tuple[int, ...]
    kv: tuple[tuple[int, ...], ...]
    heads: tuple[tuple[tuple[int, ...], ...], ...]
    mlp: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Genome:
    """One point of the space: sizes, depth choice and (fine granularity) index picks."""

    layers: int
    hidden: int
    kv_groups: int
    heads_per_group: int
    mlp: int
    depth: str = "top"
    block_start: int = 0  # depth "block": teacher layers [block_start, block_start + L - layers) removed
    free_layers: tuple[int, ...] = ()  # depth "free": the kept teacher layers, sorted
    picks: Picks | None = None
    layer_sizes: tuple[tuple[int, int, int], ...] = ()  # layer-wise: (kv_groups, heads_per_group, mlp) per
    # teacher layer

    def sizes(self) -> tuple[int, int, int, int, int]:
        """``(layers, hidden, kv_groups, heads_per_group, mlp)``."""
        return (self.layers, self.hidden, self.kv_groups, self.heads_per_group, self.mlp)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the journal."""
        out = asdict(self)
        if self.picks is None:
            out.pop("picks")
        if not self.layer_sizes:
            out.pop("layer_sizes")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genome:
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        d["free_layers"] = tuple(d.get("free_layers", ()))
        d["layer_sizes"] = tuple(tuple(int(x) for x in s) for s in d.get("layer_sizes", ()))
        p = d.pop("picks", None)
        if p is not None:
            d["picks"] = Picks(
                hidden=tuple(p["hidden"]), kv=tuple(tuple(x) for x in p["kv"]),
                heads=tuple(tuple(tuple(h) for h in layer) for layer in p["heads"]),
                mlp=tuple(tuple(x) for x in p["mlp"]),
            )
        return cls(**d)


def resize(kept: tuple[int, ...], order: tuple[int, ...], k: int) -> tuple[int, ...]:
    """``kept`` grown or shrunk to ``k`` indices along ``order`` (drop the last-ranked, add the
    first-ranked missing ones); returned sorted."""
    if len(kept) == k:
        return tuple(sorted(kept))
    rank = {v: i for i, v in enumerate(order)}
    if len(kept) > k:
        return tuple(sorted(sorted(kept, key=rank.__getitem__)[:k]))
    have = set(kept)
    extra = [v for v in order if v not in have][: k - len(kept)]
    return tuple(sorted([*kept, *extra]))


def swap_one(kept: tuple[int, ...], order: tuple[int, ...], rng: random.Random) -> tuple[int, ...]:
    """Swap one kept index for a dropped one, both near the order's boundary (the last quarter of
    the kept, the first quarter of the dropped); ``kept`` unchanged when nothing is dropped."""
    have = set(kept)
    dropped = [v for v in order if v not in have]
    if not dropped:
        return tuple(sorted(kept))
    rank = {v: i for i, v in enumerate(order)}
    ranked = sorted(kept, key=rank.__getitem__)
    out_v = rng.choice(ranked[-max(1, len(ranked) // 4):])
    in_v = rng.choice(dropped[: max(1, len(dropped) // 4)])
    return tuple(sorted((have - {out_v}) | {in_v}))


class SearchSpace:
    """A :class:`SpaceDefinition` bound to a teacher's adapter and an index order."""

    def __init__(self, config: SpaceDefinition, adapter: ModelAdapter, orders: Orders) -> None:
        if config.layout == "layer-wise" and not adapter.layerwise:
            raise ConfigError(f"layout layer-wise: {type(adapter.config).__name__} students keep the same sizes in "
                              "every layer; use layout: uniform, or a Llama-family teacher")
        self.config = config
        self.adapter = adapter
        self.dims = adapter.dims
        self.orders = orders
        self.values = {name: getattr(config, name).values() for name in SIZE_GENES}
        self.attention = self._legal_attention()
        self.heads_of: dict[int, list[tuple[int, int]]] = {}  # hidden -> legal (kv_groups, heads_per_group)
        for h, g, hp in self.attention:
            self.heads_of.setdefault(h, []).append((g, hp))

    @property
    def layerwise(self) -> bool:
        """Whether genomes carry per-layer sizes."""
        return self.config.layout == "layer-wise"

    def snap_layer(self, hidden: int, sizes: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(kv_groups, heads_per_group, mlp)`` moved to the nearest legal values of the space for ``hidden``."""
        kv, hp, m = sizes
        g, hp = min(self.heads_of[hidden], key=lambda o: (abs(o[0] - kv) + abs(o[1] - hp), o))
        return g, hp, min(self.values["mlp"], key=lambda v: (abs(v - m), v))

    def layer_sizes(self, genome: Genome) -> list[tuple[int, int, int]]:
        """``(kv_groups, heads_per_group, mlp)`` of every kept layer, in the student's order."""
        if not genome.layer_sizes:
            return [(genome.kv_groups, genome.heads_per_group, genome.mlp)] * genome.layers
        return [genome.layer_sizes[t] for t in self.layer_ids(genome)]

    @property
    def fine(self) -> bool:
        """Whether genomes carry explicit index picks."""
        return self.config.granularity == "fine"

    def _legal_attention(self) -> tuple[tuple[int, int, int], ...]:
        """Every (hidden, kv_groups, heads_per_group) of the space that the family accepts."""
        legal, last = [], None
        mlp = self.values["mlp"][0]
        for h in self.values["hidden"]:
            for g in self.values["kv_groups"]:
                for hp in self.values["heads_per_group"]:
                    spec = from_sizes(self.dims, layers=1, hidden=h, kv_groups=g, heads_per_group=hp, mlp=mlp)
                    try:
                        self.adapter.validate(spec)
                    except SpecError as exc:
                        last = exc
                        continue
                    legal.append((h, g, hp))
        if not legal:
            raise ConfigError(
                f"no (hidden, kv_groups, heads_per_group) of the space is legal for this teacher ({last}); "
                "widen the space's hidden or head ranges"
            )
        return tuple(legal)

    def shape(self, genome: Genome) -> Shape:
        """The genome's sizes as a :class:`Shape` (layer-wise when its layers differ)."""
        if not genome.layer_sizes:
            return Shape.of(*genome.sizes())
        return Shape.of_layers(genome.hidden, [LayerSizes(g, g * hp, m) for g, hp, m in self.layer_sizes(genome)])

    def layer_ids(self, genome: Genome) -> tuple[int, ...]:
        """The kept teacher layers, in teacher order."""
        n, total = genome.layers, self.dims.num_hidden_layers
        if genome.depth == "top":
            return tuple(sorted(self.orders.layers[:n]))
        if genome.depth == "block":
            removed = range(genome.block_start, genome.block_start + total - n)
            return tuple(i for i in range(total) if i not in removed)
        return genome.free_layers

    def to_spec(self, genome: Genome) -> SubnetSpec:
        """The sub-network a genome stands for, checked by the family's adapter."""
        p, layers = genome.picks, self.layer_ids(genome)
        if p is None:
            return self.adapter.validate(pick(self.orders, layers, self.shape(genome)))
        spec = SubnetSpec(
            layers=layers, hidden=p.hidden, kv_groups=tuple(p.kv[t] for t in layers),
            heads=tuple(tuple(p.heads[t][grp] for grp in p.kv[t]) for t in layers), mlp=tuple(p.mlp[t] for t in layers),
        )
        return self.adapter.validate(spec)

    def fit(self, genome: Genome) -> Genome:
        """Make the depth arguments and index picks agree with the genome's sizes."""
        n = genome.layers
        start = min(max(genome.block_start, 0), n) if genome.depth == "block" and n < self.dims.num_hidden_layers else 0
        free = resize(genome.free_layers, self.orders.layers, n) if genome.depth == "free" else ()
        sizes = ()
        if self.layerwise:
            template = (genome.kv_groups, genome.heads_per_group, genome.mlp)
            given = genome.layer_sizes or (template,) * self.dims.num_hidden_layers
            sizes = tuple(self.snap_layer(genome.hidden, s) for s in given)
        genome = replace(genome, block_start=start, free_layers=free, layer_sizes=sizes)
        return replace(genome, picks=self._fit_picks(genome) if self.fine else None)

    def _fit_picks(self, genome: Genome) -> Picks:
        o, p = self.orders, genome.picks
        n_layers, n_groups = self.dims.num_hidden_layers, self.dims.num_key_value_heads
        if p is None:
            p = Picks(hidden=(), kv=((),) * n_layers, heads=(((),) * n_groups,) * n_layers, mlp=((),) * n_layers)
        sizes = genome.layer_sizes or ((genome.kv_groups, genome.heads_per_group, genome.mlp),) * n_layers
        return Picks(
            hidden=resize(p.hidden, o.hidden, genome.hidden),
            kv=tuple(resize(p.kv[t], o.kv[t], sizes[t][0]) for t in range(n_layers)),
            heads=tuple(
                tuple(resize(p.heads[t][grp], o.heads[t][grp], sizes[t][1]) for grp in range(n_groups))
                for t in range(n_layers)
            ),
            mlp=tuple(resize(p.mlp[t], o.mlp[t], sizes[t][2]) for t in range(n_layers)),
        )
