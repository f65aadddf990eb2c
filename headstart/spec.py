"""The one description of a sub-network, relative to its teacher.

A :class:`SubnetSpec` names, by teacher index, everything the student keeps:

* ``layers``: the kept decoder layers, in the order the student runs them;
* ``hidden``: the kept residual (hidden) channels, in the student's channel order;
* ``kv_groups[i]``: for student layer ``i``, the kept key/value groups (teacher group indices);
* ``heads[i][j]``: for student layer ``i`` and its ``j``-th kept group, the kept query heads as
  offsets ``0 … heads_per_group-1`` inside that teacher group (GQA); MHA is the case of one query
  head per group, MQA of a single group;
* ``mlp[i]``: for student layer ``i``, the kept MLP neurons.

Counts are uniform (every layer keeps as many groups, heads per group and neurons) so that the
student is a standard config; the indices may differ from layer to layer. Search, extraction,
training and reports all speak of sub-networks through this type only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from headstart.errors import SpecError
from headstart.io import write_json, write_yaml

MODES: tuple[str, ...] = ("importance", "first-k")  # index orders: calibration scores, or leading indices



@dataclass(frozen=True)
class TeacherDims:
    """The shape of a teacher, as far as sub-network selection is concerned."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int

    @property
    def heads_per_group(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_heads // self.num_kv_heads

    @property
    def shape(self) -> Shape:
        """The teacher's own sizes."""
        return Shape(self.num_layers, self.hidden_size, self.num_kv_heads, self.num_heads, self.intermediate_size)


def _ints(values: Sequence[Any], what: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"{what} must hold integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class Shape:
    """A sub-network's sizes with Hugging Face config names: what parameter and FLOP counts read."""

    num_hidden_layers: int
    hidden_size: int
    num_key_value_heads: int
    num_attention_heads: int
    intermediate_size: int

    @classmethod
    def of(cls, layers: int, hidden: int, kv_groups: int, heads_per_group: int, mlp: int) -> Shape:
        """The shape of plain gene sizes (query heads = kv groups x heads per group)."""
        return cls(layers, hidden, kv_groups, kv_groups * heads_per_group, mlp)

    @property
    def heads_per_group(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_attention_heads // max(1, self.num_key_value_heads)


@dataclass(frozen=True)
class SubnetSpec:
    """A sub-network of a teacher, given by the teacher indices it keeps (see module docstring)."""

    layers: tuple[int, ...]
    hidden: tuple[int, ...]
    kv_groups: tuple[tuple[int, ...], ...]
    heads: tuple[tuple[tuple[int, ...], ...], ...]
    mlp: tuple[tuple[int, ...], ...]

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def shape(self) -> Shape:
        """The sizes of this spec (per layer; uniform across layers)."""
        n_kv = len(self.kv_groups[0]) if self.kv_groups else 0
        hpg = len(self.heads[0][0]) if self.heads and self.heads[0] else 0
        return Shape(
            num_hidden_layers=len(self.layers), hidden_size=len(self.hidden), num_key_value_heads=n_kv,
            num_attention_heads=n_kv * hpg, intermediate_size=len(self.mlp[0]) if self.mlp else 0,
        )

    @property
    def num_layers(self) -> int:
        """Number of student layers."""
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        """Student residual width."""
        return len(self.hidden)

    def sizes(self) -> dict[str, int]:
        """The plain sizes of this spec, with Hugging Face names."""
        return asdict(self.shape)

    def describe(self) -> str:
        """One-line summary of the sizes."""
        sh = self.shape
        return (
            f"{sh.num_hidden_layers} layers, hidden {sh.hidden_size}, {sh.num_key_value_heads} kv groups x "
            f"{sh.heads_per_group} heads, mlp {sh.intermediate_size}"
        )

    # -- validation ----------------------------------------------------------------------------
    def validate(self, dims: TeacherDims) -> SubnetSpec:
        """Check every index and count against ``dims``; raise :class:`SpecError` on the first fault.

        Returns ``self`` so that calls can be chained.
        """
        n = self.num_layers
        if n == 0:
            raise SpecError("spec keeps no layers; keep at least one")
        _check_index_list(self.layers, dims.num_layers, "layers", "teacher layers")
        _check_index_list(self.hidden, dims.hidden_size, "hidden", "hidden channels")
        for name, per_layer in (("kv_groups", self.kv_groups), ("heads", self.heads), ("mlp", self.mlp)):
            if len(per_layer) != n:
                raise SpecError(f"{name} has {len(per_layer)} entries but the spec keeps {n} layers")
        sh = self.shape
        n_groups, hpg, n_mlp = sh.num_key_value_heads, sh.heads_per_group, sh.intermediate_size
        for i in range(n):
            where = f"layer {i} (teacher layer {self.layers[i]})"
            _check_index_list(self.kv_groups[i], dims.num_kv_heads, f"kv_groups of {where}", "kv groups")
            if len(self.kv_groups[i]) != n_groups:
                raise SpecError(
                    f"kv_groups of {where} keeps {len(self.kv_groups[i])} groups, layer 0 keeps {n_groups}; "
                    "every layer must keep the same number"
                )
            if len(self.heads[i]) != n_groups:
                raise SpecError(
                    f"heads of {where} lists {len(self.heads[i])} groups but kv_groups keeps {n_groups}"
                )
            for j, heads in enumerate(self.heads[i]):
                _check_index_list(
                    heads, dims.heads_per_group, f"heads of {where}, group {self.kv_groups[i][j]}",
                    "query heads per kv group",
                )
                if len(heads) != hpg:
                    raise SpecError(
                        f"heads of {where}, group {self.kv_groups[i][j]} keeps {len(heads)} query heads, "
                        f"others keep {hpg}; every group must keep the same number"
                    )
            _check_index_list(self.mlp[i], dims.intermediate_size, f"mlp of {where}", "MLP neurons")
            if len(self.mlp[i]) != n_mlp:
                raise SpecError(
                    f"mlp of {where} keeps {len(self.mlp[i])} neurons, layer 0 keeps {n_mlp}; "
                    "every layer must keep the same number"
                )
        return self

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain lists, ready for YAML/JSON."""
        return {
            "layers": list(self.layers),
            "hidden": list(self.hidden),
            "kv_groups": [list(g) for g in self.kv_groups],
            "heads": [[list(h) for h in layer] for layer in self.heads],
            "mlp": [list(m) for m in self.mlp],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubnetSpec:
        """Inverse of :meth:`to_dict`; rejects unknown or missing keys with a precise message."""
        if not isinstance(data, dict):
            raise SpecError(f"a spec must be a mapping, got {type(data).__name__}")
        data = data.get("spec", data) if "layers" not in data else data
        keys = {"layers", "hidden", "kv_groups", "heads", "mlp"}
        unknown = set(data) - keys
        if unknown:
            raise SpecError(f"unknown spec key(s) {sorted(unknown)}; a spec has {sorted(keys)}")
        missing = keys - set(data)
        if missing:
            raise SpecError(f"spec is missing {sorted(missing)}")
        try:
            return cls(
                layers=_ints(data["layers"], "layers"),
                hidden=_ints(data["hidden"], "hidden"),
                kv_groups=tuple(_ints(g, "kv_groups") for g in data["kv_groups"]),
                heads=tuple(tuple(_ints(h, "heads") for h in layer) for layer in data["heads"]),
                mlp=tuple(_ints(m, "mlp") for m in data["mlp"]),
            )
        except TypeError as exc:
            raise SpecError(f"malformed spec: {exc}") from None

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Write the spec as YAML (or JSON if the name ends in .json), atomically.

        ``extra`` is stored beside the spec (e.g. the teacher it refers to, parameter count).
        """
        path = Path(path)
        doc = {**(extra or {}), "sizes": self.sizes(), "spec": self.to_dict()}
        return write_json(path, doc) if path.suffix == ".json" else write_yaml(path, doc)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SubnetSpec:
        """Read a spec written by :meth:`save` (YAML or JSON)."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SpecError(f"{path} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
        if isinstance(doc, dict) and "spec" in doc:
            doc = doc["spec"]
        return cls.from_dict(doc)

    def canonical(self) -> SubnetSpec:
        """The same sub-network with every index set sorted (layer order kept): equal functions,
        equal canonical specs."""
        groups, heads = [], []
        for g, hs in zip(self.kv_groups, self.heads):
            pairs = sorted(zip(g, hs))
            groups.append(tuple(p[0] for p in pairs))
            heads.append(tuple(tuple(sorted(p[1])) for p in pairs))
        return SubnetSpec(
            layers=self.layers, hidden=tuple(sorted(self.hidden)), kv_groups=tuple(groups),
            heads=tuple(heads), mlp=tuple(tuple(sorted(m)) for m in self.mlp),
        )

    def key(self) -> str:
        """A canonical string for caches and journals."""
        return json.dumps(self.canonical().to_dict(), separators=(",", ":"))

def _check_index_list(values: Sequence[int], limit: int, name: str, what: str) -> None:
    if len(values) == 0:
        raise SpecError(f"{name} is empty; keep at least one")
    if len(values) > limit:
        raise SpecError(f"{name} keeps {len(values)} but the teacher has only {limit} {what}")
    for v in values:
        if not 0 <= v < limit:
            raise SpecError(f"{name} has index {v}, out of range 0..{limit - 1} ({limit} {what})")
    if len(set(values)) != len(values):
        dup = sorted({v for v in values if list(values).count(v) > 1})
        raise SpecError(f"{name} repeats index {dup[0]}; each index may appear once")
