"""Which teacher indices a sub-network keeps: index orders and selection by sizes, in one place.

An :class:`Orders` ranks every component of the teacher (layers, residual channels, kv groups,
query heads within a group, MLP neurons), most preferred first: ``first-k`` keeps the leading
indices, as whittle does; ``importance`` ranks by the calibration scores (layers by block
influence). :func:`pick` turns an order and plain sizes into a :class:`~headstart.spec.SubnetSpec`;
the search space and :func:`from_sizes` both select through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from headstart.config.common import ORDERS
from headstart.errors import SpecError
from headstart.importance import Importance
from headstart.spec import Shape, SubnetSpec, TeacherDims


def rank(scores: Any) -> tuple[int, ...]:
    """Indices by decreasing score; ties go to the lower index."""
    order = torch.argsort(-torch.as_tensor(scores, dtype=torch.float64), stable=True)
    return tuple(int(i) for i in order)


@dataclass(frozen=True)
class Orders:
    """Index preference orders (first = kept first), per component of the teacher."""

    name: str
    layers: tuple[int, ...]
    hidden: tuple[int, ...]
    kv: tuple[tuple[int, ...], ...]  # [teacher layer] -> groups
    heads: tuple[tuple[tuple[int, ...], ...], ...]  # [teacher layer][teacher group] -> head offsets
    mlp: tuple[tuple[int, ...], ...]  # [teacher layer] -> neurons

    @classmethod
    def first_k(cls, dims: TeacherDims) -> Orders:
        """Leading indices first (whittle's slicing)."""
        n = dims.num_hidden_layers
        return cls(
            name="first-k", layers=tuple(range(n)), hidden=tuple(range(dims.hidden_size)),
            kv=(tuple(range(dims.num_key_value_heads)),) * n,
            heads=((tuple(range(dims.heads_per_group)),) * dims.num_key_value_heads,) * n,
            mlp=(tuple(range(dims.intermediate_size)),) * n,
        )

    @classmethod
    def from_importance(cls, dims: TeacherDims, imp: Importance) -> Orders:
        """Most important first (layers by block influence); ties go to the lower index."""
        n, g, hpg = dims.num_hidden_layers, dims.num_key_value_heads, dims.heads_per_group
        heads = tuple(tuple(rank(imp.heads[t].reshape(g, hpg)[grp]) for grp in range(g)) for t in range(n))
        return cls(
            name="importance", layers=rank(imp.layers), hidden=rank(imp.hidden),
            kv=tuple(rank(imp.kv_groups[t]) for t in range(n)), heads=heads,
            mlp=tuple(rank(imp.mlp[t]) for t in range(n)),
        )

    @classmethod
    def of(cls, dims: TeacherDims, order: str = "first-k", importance: Importance | None = None) -> Orders:
        """The index order named ``order``; ``importance`` needs the calibration scores."""
        if order not in ORDERS:
            raise SpecError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
        if order == "first-k":
            return cls.first_k(dims)
        if importance is None:
            raise SpecError("order 'importance' needs importance scores; run the calibration pass first")
        return cls.from_importance(dims, importance)


def pick(orders: Orders, layers: Sequence[int], shape: Shape) -> SubnetSpec:
    """The sub-network keeping teacher ``layers`` and, per layer, the first indices of ``orders``
    (as many as ``shape`` gives that layer: a layer-wise shape gives each layer its own)."""
    groups, heads, mlp = [], [], []
    for t, sizes in zip(layers, shape.layers(), strict=True):
        g, hpg, m = sizes.num_key_value_heads, sizes.heads_per_group, sizes.intermediate_size
        kept = orders.kv[t][:g]
        groups.append(tuple(kept))
        heads.append(tuple(orders.heads[t][grp][:hpg] for grp in kept))
        mlp.append(tuple(orders.mlp[t][:m]))
    return SubnetSpec(layers=tuple(layers), hidden=tuple(orders.hidden[: shape.hidden_size]),
                      kv_groups=tuple(groups), heads=tuple(heads), mlp=tuple(mlp))


def from_sizes(
    dims: TeacherDims,
    *,
    layers: int | Sequence[int] | None = None,
    hidden: int | None = None,
    kv_groups: int | None = None,
    heads_per_group: int | None = None,
    mlp: int | None = None,
    order: str = "first-k",
    importance: Importance | None = None,
) -> SubnetSpec:
    """A validated spec from plain sizes (``None`` keeps the teacher's size).

    ``layers`` is a count (the first of the order, kept in teacher order) or an explicit list of
    teacher layer indices; every other component keeps the first indices of the ``order``.
    """
    orders = Orders.of(dims, order, importance)
    sizes = {
        "hidden": (hidden, dims.hidden_size), "kv_groups": (kv_groups, dims.num_key_value_heads),
        "heads_per_group": (heads_per_group, dims.heads_per_group), "mlp": (mlp, dims.intermediate_size),
    }
    if layers is None or isinstance(layers, int):
        sizes["layers"] = (layers, dims.num_hidden_layers)
    got = {name: limit if size is None else size for name, (size, limit) in sizes.items()}
    for name, (_, limit) in sizes.items():
        if got[name] < 1:
            raise SpecError(f"{name}={got[name]} must be at least 1")
        if got[name] > limit:
            raise SpecError(f"{name}={got[name]} is larger than the teacher's {limit}")
    if "layers" in got:
        layer_ids: Sequence[int] = sorted(orders.layers[: got["layers"]])
    else:
        layer_ids = _ints(layers, "layers")  # type: ignore[arg-type]
        bad = [t for t in layer_ids if not 0 <= t < dims.num_hidden_layers]
        if bad:
            raise SpecError(f"layers has index {bad[0]}, out of range 0..{dims.num_hidden_layers - 1}")
    shape = Shape.of(len(layer_ids), got["hidden"], got["kv_groups"], got["heads_per_group"], got["mlp"])
    return pick(orders, layer_ids, shape).validate(dims)


def full(dims: TeacherDims, importance: Importance | None = None) -> SubnetSpec:
    """The whole teacher; in importance order when ``importance`` is given."""
    return from_sizes(dims, order="importance" if importance is not None else "first-k", importance=importance)


def _ints(values: Sequence[Any], what: str) -> tuple[int, ...]:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"{what} must hold integers, got {v!r}")
    return tuple(int(v) for v in values)
