"""The one description of a sub-network, relative to its teacher.

A :class:`SubnetSpec` names, by teacher index, everything the student keeps:

* ``layers``: the kept decoder layers, in the order the student runs them;
* ``hidden``: the kept residual (hidden) channels, in the student's channel order;
* ``kv_groups[i]``: for student layer ``i``, the kept key/value groups (teacher group indices);
* ``heads[i][j]``: for student layer ``i`` and its ``j``-th kept group, the kept query heads as
  offsets ``0 … heads_per_group-1`` inside that teacher group (GQA); MHA is the case of one query
  head per group, MQA of a single group;
* ``mlp[i]``: for student layer ``i``, the kept MLP neurons.

A *uniform* spec keeps as many groups, heads per group and neurons in every layer, so the student
is a standard config of the teacher's family; a *layer-wise* spec lets each layer keep its own
counts (within one layer every kept group keeps the same number of query heads, as GQA needs) and
exports with the per-layer config of :mod:`headstart.models.layerwise`. Search, extraction,
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


@dataclass(frozen=True)
class TeacherDims:
    """The shape of a teacher, as far as sub-network selection is concerned."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int

    @property
    def heads_per_group(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    layer_sizes: tuple[LayerSizes, ...] | None = None  # per layer, for a layer-wise checkpoint

    @property
    def shape(self) -> Shape:
        """The teacher's own sizes."""
        return Shape(self.num_hidden_layers, self.hidden_size, self.num_key_value_heads, self.num_attention_heads,
                     self.intermediate_size, self.layer_sizes)


def _ints(values: Sequence[Any], what: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"{what} must hold integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class LayerSizes:
    """What one decoder layer keeps, with Hugging Face config names."""

    num_key_value_heads: int
    num_attention_heads: int
    intermediate_size: int

    @property
    def heads_per_group(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_attention_heads // max(1, self.num_key_value_heads)


@dataclass(frozen=True)
class Shape:
    """A sub-network's sizes with Hugging Face config names: what parameter and FLOP counts read.

    ``layer_sizes`` is ``None`` for a uniform shape; for a layer-wise one it lists every layer's
    sizes and the scalar counts are the largest layer's (an upper bound, not a layer).
    """

    num_hidden_layers: int
    hidden_size: int
    num_key_value_heads: int
    num_attention_heads: int
    intermediate_size: int
    layer_sizes: tuple[LayerSizes, ...] | None = None

    @classmethod
    def of(cls, layers: int, hidden: int, kv_groups: int, heads_per_group: int, mlp: int) -> Shape:
        """The shape of plain gene sizes (query heads = kv groups x heads per group)."""
        return cls(layers, hidden, kv_groups, kv_groups * heads_per_group, mlp)

    @classmethod
    def of_layers(cls, hidden: int, layers: Sequence[LayerSizes]) -> Shape:
        """The shape of per-layer sizes; uniform (``layer_sizes=None``) when every layer is alike."""
        layers = tuple(layers)
        top = (max(s.num_key_value_heads for s in layers), max(s.num_attention_heads for s in layers),
               max(s.intermediate_size for s in layers))
        return cls(len(layers), hidden, *top, None if len(set(layers)) == 1 else layers)

    @property
    def uniform(self) -> bool:
        """Whether every layer keeps the same sizes."""
        return self.layer_sizes is None

    def layers(self) -> tuple[LayerSizes, ...]:
        """The sizes of every layer (a uniform shape repeats its one layer)."""
        if self.layer_sizes is not None:
            return self.layer_sizes
        one = LayerSizes(self.num_key_value_heads, self.num_attention_heads, self.intermediate_size)
        return (one,) * self.num_hidden_layers

    @property
    def heads_per_group(self) -> int:
        """Query heads that share one key/value head (of the largest layer when layer-wise)."""
        return self.num_attention_heads // max(1, self.num_key_value_heads)

    def sizes(self) -> dict[str, Any]:
        """Plain sizes with Hugging Face names; a layer-wise shape adds ``layer_sizes``, a list of dicts."""
        out: dict[str, Any] = asdict(self)
        if self.layer_sizes is None:
            out.pop("layer_sizes")
        else:
            out["layer_sizes"] = list(out["layer_sizes"])
        return out


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
        """The sizes of this spec: uniform when every layer keeps the same counts, else layer-wise."""
        if not self.layers:
            return Shape(0, len(self.hidden), 0, 0, 0)
        per_layer = [
            LayerSizes(len(g), sum(len(h) for h in hs), len(m))
            for g, hs, m in zip(self.kv_groups, self.heads, self.mlp)
        ]
        return Shape.of_layers(len(self.hidden), per_layer)

    @property
    def uniform(self) -> bool:
        """Whether every layer keeps the same counts (a standard config of the teacher's family)."""
        return self.shape.uniform

    @property
    def num_hidden_layers(self) -> int:
        """Number of student layers."""
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        """Student residual width."""
        return len(self.hidden)

    def sizes(self) -> dict[str, Any]:
        """The plain sizes of this spec, with Hugging Face names (see :meth:`Shape.sizes`)."""
        return self.shape.sizes()

    def describe(self) -> str:
        """One-line summary of the sizes."""
        sh = self.shape
        if sh.uniform:
            return (
                f"{sh.num_hidden_layers} layers, hidden {sh.hidden_size}, {sh.num_key_value_heads} kv groups x "
                f"{sh.heads_per_group} heads, mlp {sh.intermediate_size}"
            )
        per = " ".join(f"{s.num_key_value_heads}x{s.heads_per_group}/{s.intermediate_size}" for s in sh.layers())
        return f"{sh.num_hidden_layers} layers (layer-wise), hidden {sh.hidden_size}, kv x heads/mlp per layer: {per}"

    # -- validation ----------------------------------------------------------------------------
    def validate(self, dims: TeacherDims) -> SubnetSpec:
        """Check every index and count against ``dims``; raise :class:`SpecError` on the first fault.

        Returns ``self`` so that calls can be chained.
        """
        n = self.num_hidden_layers
        if n == 0:
            raise SpecError("spec keeps no layers; keep at least one")
        _check_index_list(self.layers, dims.num_hidden_layers, "layers", "teacher layers")
        _check_index_list(self.hidden, dims.hidden_size, "hidden", "hidden channels")
        for name, per_layer in (("kv_groups", self.kv_groups), ("heads", self.heads), ("mlp", self.mlp)):
            if len(per_layer) != n:
                raise SpecError(f"{name} has {len(per_layer)} entries but the spec keeps {n} layers")
        for i in range(n):
            where = f"layer {i} (teacher layer {self.layers[i]})"
            _check_index_list(self.kv_groups[i], dims.num_key_value_heads, f"kv_groups of {where}", "kv groups")
            n_groups = len(self.kv_groups[i])
            if len(self.heads[i]) != n_groups:
                raise SpecError(
                    f"heads of {where} lists {len(self.heads[i])} groups but kv_groups keeps {n_groups}"
                )
            hpg = len(self.heads[i][0]) if self.heads[i] else 0
            for j, heads in enumerate(self.heads[i]):
                _check_index_list(
                    heads, dims.heads_per_group, f"heads of {where}, group {self.kv_groups[i][j]}",
                    "query heads per kv group",
                )
                if len(heads) != hpg:
                    raise SpecError(
                        f"heads of {where}, group {self.kv_groups[i][j]} keeps {len(heads)} query heads, "
                        f"its first group keeps {hpg}; every group of a layer must keep the same number (GQA)"
                    )
            _check_index_list(self.mlp[i], dims.intermediate_size, f"mlp of {where}", "MLP neurons")
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
            doc = yaml.safe_load(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise SpecError(f"{path} is not a spec file (binary data, not YAML/JSON text); give the spec.yaml "
                            "that search or extract wrote") from None
        except OSError as exc:
            raise SpecError(f"cannot read the spec file {path} ({exc.strerror or exc})") from None
        except (yaml.YAMLError, RecursionError) as exc:
            raise SpecError(f"{path} is not valid YAML/JSON: {(str(exc).splitlines() or ['too deeply nested'])[0]}"
                            ) from None
        if isinstance(doc, dict) and "spec" in doc:
            doc = doc["spec"]
        try:
            return cls.from_dict(doc)
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}; give a spec written by search or extract") from None

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

    def canonical_json(self) -> str:
        """The canonical spec as compact JSON: equal sub-networks, equal strings (caches and journals hash it)."""
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
