"""A recipe: everything ``headstart run`` does, in one YAML file.

```yaml
teacher: builtin:smollm2-135m
out: runs/demo
seed: 0
data:    {inputs: [builtin:shakespeare]}          # headstart prepare options
search:  {params: 60M, evaluations: 40}           # headstart search options (one budget: the student's)
train:   {tokens: 200000, lr: 0.001, kd: forward} # headstart train options, shared by every run
compare: {runs: [random-ce, first-k-kd, searched-ce, searched-kd], overrides: {random-ce: {lr: 0.0003}}}
eval:    {windows: 64, seq_len: 256, max_new_tokens: 40}
```

Sections take the options of the stage's own command (same names as its flags, ``-`` or ``_``);
an unknown key is an error naming it and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.config import check_keys, read_yaml_mapping
from headstart.errors import ConfigError

#: The paper's comparison: name -> (student init, distill?)
RUNS: dict[str, tuple[str, bool]] = {
    "random-ce": ("random", False),
    "first-k-kd": ("first-k", True),
    "searched-ce": ("searched", False),
    "searched-kd": ("searched", True),
}
RUN_LABELS = {
    "random-ce": "random init, CE",
    "first-k-kd": "first-k sub-network, KD",
    "searched-ce": "searched sub-network, CE",
    "searched-kd": "searched sub-network, KD",
}
# Options a recipe sets itself, per section (they cannot appear inside the section).
_OWNED = {"search": {"teacher", "data", "out", "resume"}, "train": {"teacher", "data", "out", "student", "resume"}}


@dataclass
class DataRecipe:
    """Options of the prepare stage."""

    inputs: list[str] = field(default_factory=lambda: ["builtin:shakespeare"])
    text_field: str = "text"
    search_frac: float | None = None
    val_frac: float | None = None
    workers: int | None = None


@dataclass
class CompareRecipe:
    """Which runs to train and what each one changes."""

    runs: list[str] = field(default_factory=lambda: list(RUNS))
    baseline: str = "random-ce"
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class EvalRecipe:
    """Options of the evaluation stage."""

    windows: int = 64
    seq_len: int = 256
    batch_size: int = 8
    max_new_tokens: int = 40


@dataclass
class Recipe:
    """A whole pipeline run."""

    teacher: str = "builtin:smollm2-135m"
    out: str = "runs/headstart"
    seed: int = 0
    data: DataRecipe = field(default_factory=DataRecipe)
    search: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    compare: CompareRecipe = field(default_factory=CompareRecipe)
    eval: EvalRecipe = field(default_factory=EvalRecipe)

    def __post_init__(self) -> None:
        from headstart.search.pipeline import SearchJob
        from headstart.train.config import TrainConfig

        self.search = check_keys(self.search, _field_names(SearchJob) - _OWNED["search"], "recipe", "search")
        self.train = check_keys(self.train, _field_names(TrainConfig) - _OWNED["train"], "recipe", "train")
        if "params" not in self.search:
            raise ConfigError("recipe needs search.params: the student's parameter budget (e.g. 60M)")
        for name in self.compare.runs:
            if name not in RUNS:
                close = difflib.get_close_matches(name, list(RUNS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; runs are {', '.join(RUNS)}"
                raise ConfigError(f"unknown run {name!r} in compare.runs{hint}")
        if self.compare.baseline not in self.compare.runs:
            raise ConfigError(f"compare.baseline {self.compare.baseline!r} is not one of compare.runs")
        for name, over in self.compare.overrides.items():
            if name not in self.compare.runs:
                raise ConfigError(f"compare.overrides names run {name!r}, which is not in compare.runs")
            check_keys(over, _field_names(TrainConfig) - _OWNED["train"], "recipe", f"compare.overrides.{name}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "recipe") -> Recipe:
        """Build from a mapping, refusing unknown keys (with the closest valid one)."""
        top = check_keys(data, _field_names(cls), where)
        sections = {"data": DataRecipe, "compare": CompareRecipe, "eval": EvalRecipe}
        for name, klass in sections.items():
            if name in top:
                values = check_keys(top[name] or {}, _field_names(klass), where, name)
                top[name] = klass(**values)
        return cls(**top)

    @classmethod
    def load(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
        """Read a recipe YAML; ``overrides`` (e.g. ``{"out": ...}``) replace top-level keys."""
        data = read_yaml_mapping(path, "recipe")
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as saved beside the outputs."""
        return dataclasses.asdict(self)


def _field_names(klass: type) -> set[str]:
    return {f.name for f in dataclasses.fields(klass)}
