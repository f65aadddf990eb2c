"""A recipe: everything ``headstart run`` does, as one tree of the stages' own options.

```yaml
teacher: builtin:smollm2-135m                   # where from and where to (paths)
corpus: [builtin:shakespeare]
out: runs/demo
seed: 0                                          # search, init and data order (a section may override)
prepare: {text_field: text}                      # PrepareConfig (headstart prepare)
search:  {params: 30M,60M, evolution: {evaluations: 40}}   # SearchConfig: one bin per budget
train:   {tokens: 200000, optim: {lr: 0.001}}    # TrainConfig, shared by every run
compare: {runs: [random-ce, searched-kd]}
eval:    {windows: 64, seq_len: 256}             # EvalConfig
```

Sections take the options of the stage's own command (same names as its flags, ``-`` or ``_``) and are
validated as those commands validate them; the whole recipe — every comparison run of every budget —
is checked when it is loaded, before any stage runs.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from headstart.config.common import TEACHER_HELP
from headstart.config.evaluate import EvalConfig, EvalPaths
from headstart.config.extract import ReconstructConfig
from headstart.config.fields import SEED, ConfigError, FieldError, Section, build, merge, normalize, option
from headstart.config.prepare import PrepareConfig, PreparePaths
from headstart.config.search import RungsConfig, SearchConfig, SearchPaths
from headstart.config.train import INHERITED, TrainConfig, TrainPaths

#: The paper's comparison: name -> (student init, distill?)
RUNS: dict[str, tuple[str, bool]] = {
    "random-ce": ("random", False),
    "first-k-kd": ("first-k", True),
    "searched-ce": ("searched", False),
    "searched-kd": ("searched", True),
    "rung-kd": ("rung", True),
}
RUN_LABELS = {
    "random-ce": "random init, CE",
    "first-k-kd": "first-k sub-network, KD",
    "searched-ce": "searched sub-network, CE",
    "searched-kd": "searched sub-network, KD",
    "rung-kd": "searched, from its rung training, KD",
}
DEFAULT_RUNS = ["random-ce", "first-k-kd", "searched-ce", "searched-kd"]
#: The micro-batch of runs from the teacher's weights as a fraction of the train section's: half, i.e. twice the
#: optimizer steps per token (see docs/benchmarks/token_efficiency.md for what it gave).
INHERITED_BATCH = 0.5
_RENAMED = {"data": "the recipe's 'data' section is now 'corpus' (the inputs, a list) and 'prepare' (the options)",
            "extract": "the recipe's 'extract' section is now 'reconstruct' (enabled, ridge, inputs, passes)"}


@dataclass
class CompareConfig(Section):
    """Which runs to train from each budget's sub-network, and what each changes."""

    runs: list[str] = option(DEFAULT_RUNS, "runs to train (rung-kd: the searched student continued from its "
                             "training-aware rung, those tokens counted)", choices=tuple(RUNS))
    baseline: str = option("random-ce", "the run whose final loss is the target", choices=tuple(RUNS))
    inherited: dict[str, Any] | None = option(INHERITED, "train options of every run that starts from the teacher's "
                                              "weights (first-k, searched, rung), over the train section; null "
                                              "trains them as random init", cli=False)
    inherited_batch: float = option(INHERITED_BATCH, "micro-batch of the runs from the teacher's weights as a "
                                    "fraction of train.batch_size (0.5: twice the optimizer steps per token; 1: the "
                                    "same); a batch_size in inherited or overrides wins", gt=0, le=1)
    overrides: dict[str, Any] = option({}, "per-run train options, e.g. {random-ce: {optim: {lr: 0.0003}}}", cli=False)

    def check(self) -> None:
        if not self.runs:
            raise FieldError("runs", "is empty; list at least the baseline")
        if self.baseline not in self.runs:
            raise FieldError("baseline", f"{self.baseline!r} is not one of compare.runs {self.runs}")
        for name, over in self.overrides.items():
            if not isinstance(over, dict):
                raise FieldError(f"overrides.{name}", f"must be a mapping of train options, got {over!r}")
            if name not in self.runs:
                raise FieldError("overrides", f"names run {name!r}, which is not in compare.runs")


@dataclass
class RecipeConfig(Section):
    """A whole pipeline run: prepare, search, train every comparison run, evaluate, report."""

    teacher: str = option("builtin:smollm2-135m", TEACHER_HELP)
    corpus: list[str] = option(["builtin:shakespeare"], "the inputs of prepare: files, directories, globs, hf:NAME, "
                               "builtin:shakespeare")
    out: str = option("runs/headstart", "output directory")
    seed: int = option(0, "seed of the search, the students' init and the data order (sections may override)", **SEED)
    setup_share: float | None = option(0.02, "the share of one student's training FLOPs that importance, screen and "
                                       "rungs may spend together: it sizes search.fitness.windows and search.rungs "
                                       "where they are unset (null: the search's own defaults)", ge=0, le=1)
    prepare: PrepareConfig = option(PrepareConfig, "the prepare stage")
    search: SearchConfig = option(SearchConfig(params="50M"), "the search stage")
    reconstruct: ReconstructConfig = option(ReconstructConfig, "reconstructed weights for the cut students")
    train: TrainConfig = option(TrainConfig, "the training runs (shared by every comparison run)")
    compare: CompareConfig = option(CompareConfig, "the comparison")
    eval: EvalConfig = option(EvalConfig, "the evaluation of every trained student")

    def check(self) -> None:
        if not self.corpus:
            raise FieldError("corpus", "is empty; list files, directories or builtin:shakespeare")
        if self.search.params is None:
            raise FieldError("search.params", "is missing: the students' parameter budget(s), e.g. 50M")
        if "rung-kd" in self.compare.runs:
            rungs = self.search.rungs
            if rungs.count == 0:
                raise FieldError("compare.runs", "rung-kd continues the search's rung winner; set search.rungs.count "
                                 ">= 1")
            if rungs.count is not None and rungs.budget(rungs.count) >= self.train.tokens:
                raise FieldError("compare.runs", f"rung-kd: the rung winner has trained {rungs.budget(rungs.count):,} "
                                 f"tokens, not fewer than train.tokens {self.train.tokens:,}; lower "
                                 "search.rungs.tokens or raise train.tokens")
        for name in self.compare.runs:
            self.train_config(name)

    def budgets(self) -> list[int]:
        """The parameter budgets of ``search.params``, in order."""
        return self.search.budgets() or []

    def train_config(self, name: str) -> TrainConfig:
        """The :class:`TrainConfig` of comparison run ``name``."""
        init, distill = RUNS[name]
        values = asdict(self.train)
        inherited = (self.compare.inherited or {}) if init != "random" else {}
        if init != "random":
            values["batch_size"] = max(1, round(self.train.batch_size * self.compare.inherited_batch))
        values = merge(values, normalize(TrainConfig, copy.deepcopy(inherited)))
        values = merge(values, normalize(TrainConfig, copy.deepcopy(self.compare.overrides.get(name) or {})))
        values["logging"].setdefault("wandb_group", None)
        values["logging"]["wandb_group"] = values["logging"]["wandb_group"] or Path(self.out).name
        if not distill:
            values["kd"]["kind"] = "none"
        elif values["kd"]["kind"] == "none":
            raise FieldError("train.kd.kind", f"is 'none', but run {name} distills; set train.kd.kind (e.g. forward)")
        prefix = (f"compare.overrides.{name}." if name in self.compare.overrides
                  else "compare.inherited." if inherited else "train.")
        return build(TrainConfig, values, prefix=prefix)  # an unknown key or a bad value, named from the recipe

    def run_dir(self, label: str, name: str) -> Path:
        """Where comparison run ``name`` of budget ``label`` trains."""
        return Path(self.out) / "runs" / label / name


def load_recipe(data: dict[str, Any], where: str = "recipe", overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """A validated :class:`RecipeConfig` from a mapping (a YAML file's content) and flag overrides (which win).

    The top-level ``seed`` flows into the search and train sections unless they set their own.
    """
    for key, message in _RENAMED.items():
        if isinstance(data, dict) and key in data:
            raise ConfigError(f"{message}; see docs/recipes.md ({where})")
    _refuse_paths(data, where)
    values = merge(normalize(RecipeConfig, data), overrides or {})
    seed = values.get("seed", 0)
    for section in ("search", "train"):
        part = values.get(section)
        if part is None or isinstance(part, dict):
            values[section] = {"seed": seed, **(part or {})}
    _scale_rungs(values["search"], values.get("compare"))
    return build(RecipeConfig, values, where=where)


def _refuse_paths(data: Any, where: str) -> None:
    """A section that sets one of its stage's paths (``train.out``, ``search.data``, ...): the recipe sets those."""
    sections = {"prepare": PreparePaths, "search": SearchPaths, "train": TrainPaths, "eval": EvalPaths}
    for section, paths in sections.items():
        part = data.get(section) if isinstance(data, dict) else None
        names = {f.name for f in fields(paths)}
        for key in part if isinstance(part, dict) else ():
            if str(key).replace("-", "_") in names:
                raise ConfigError(f"{section}.{key} is set by the recipe itself (from teacher, corpus and out); "
                                  f"remove it from the {section} section ({where})")


def _scale_rungs(search: Any, compare: Any) -> None:
    """Rungs the search section leaves unset train on the schedule of the runs that start from the teacher's
    weights (``compare.inherited``); their number and length follow ``setup_share`` (searching/budget.py)."""
    if not isinstance(search, dict):
        return
    rungs = search.setdefault("rungs", {})
    if not isinstance(rungs, dict):
        return  # reported when the recipe is built
    inherited = compare.get("inherited", INHERITED) if isinstance(compare, dict) else INHERITED
    inherited = normalize(TrainConfig, inherited) if isinstance(inherited, dict) else {}
    for key, (section, name) in {"lr": ("optim", "lr"), "warmup": ("schedule", "warmup")}.items():
        value = (inherited.get(section) or {}).get(name) if isinstance(inherited.get(section), dict) else None
        if key not in rungs and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                RungsConfig(**{key: value})
            except FieldError:
                continue  # a bad value is reported under compare.inherited, where it was written
            rungs[key] = value
