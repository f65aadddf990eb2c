"""A recipe: everything ``headstart run`` does, as one tree of the stages' own configs.

```yaml
teacher: builtin:smollm2-135m
out: runs/demo
seed: 0                                          # search, init and data order (a section may override)
data:    {inputs: [builtin:shakespeare]}         # PrepareConfig    (headstart prepare)
search:  {params: 30M,60M, evaluations: 40}      # SearchConfig     (headstart search): one bin per budget
train:   {tokens: 200000, lr: 0.001}             # TrainConfig      (headstart train), shared by every run
compare: {runs: [random-ce, searched-kd], inherited: {warmup: 0.01, lr: 0.0005}, inherited_batch: 0.5}
eval:    {windows: 64, seq_len: 256}             # EvalConfig       (headstart eval)
```

Sections take the options of the stage's own command (same names as its flags, ``-`` or ``_``), are
coerced and validated as those commands validate them, and the whole recipe — every comparison
run of every budget — is checked when it is loaded, before any stage runs. Options the pipeline
sets itself (a section's ``out``, ``data``, ``teacher``, ``student`` ...) are refused in a section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from headstart.config import build, check_choice, merge, normalize, option, read_yaml
from headstart.configs import INHERITED, TEACHER_HELP, EvalConfig, ExtractConfig, PrepareConfig, SearchConfig, budgets
from headstart.errors import ConfigError
from headstart.train.config import TrainConfig

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
#: What ``compare.runs`` trains unless told: the paper's four (``rung-kd`` is an opt-in extra).
DEFAULT_RUNS = ["random-ce", "first-k-kd", "searched-ce", "searched-kd"]
#: INHERITED (headstart.configs) are the train options of the runs that start from the teacher's weights.
#: Their micro-batch as a fraction of the train section's: half, twice the optimizer steps per token.
#: With both, at 1M tokens over 3 seeds, the searched KD run reached random init's final loss with
#: 25.5x fewer tokens and 12.8x fewer FLOPs on the mean, against 18.6x / 9.5x at the full batch and
#: 14.9x / 7.8x on random init's schedule (bench/token_efficiency.py: ``searched-kd-w1-lr5-b4``,
#: ``searched-kd-w1-lr5``, ``searched-kd``); CE alone is level (15.4x vs 15.8x). Random init
#: gains 1.6x from the half batch at 125k but 1.05x at 1M, one seed (README, token-efficiency benchmark).
INHERITED_BATCH = 0.5


@dataclass
class CompareConfig:
    """Which runs to train from each budget's sub-network, and what each changes."""

    runs: list[str] = option(DEFAULT_RUNS, "runs to train (rung-kd: the searched student continued from its "
                             "training-aware rung, those tokens counted)", choices=tuple(RUNS))
    baseline: str = option("random-ce", "the run whose final loss is the target", choices=tuple(RUNS))
    inherited: dict[str, Any] | None = option(INHERITED, "train options of every run that starts from the "
                                              "teacher's weights (first-k, searched, rung), over the train "
                                              "section; null trains them as random init", cli=False)
    inherited_batch: float = option(INHERITED_BATCH, "micro-batch of the runs from the teacher's weights as a "
                                    "fraction of train.batch_size (0.5: twice the optimizer steps per token; 1: the "
                                    "same); a batch_size in inherited or overrides wins")
    overrides: dict[str, Any] = option({}, "per-run train options, e.g. {random-ce: {lr: 0.0003}}", cli=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.inherited_batch <= 1.0:
            raise ConfigError(f"compare.inherited_batch {self.inherited_batch} must lie in (0, 1]: a fraction of "
                              "train.batch_size")
        if not self.runs:
            raise ConfigError("compare.runs is empty; list at least the baseline")
        if self.baseline not in self.runs:
            raise ConfigError(f"compare.baseline {self.baseline!r} is not one of compare.runs {self.runs}")
        for name, over in self.overrides.items():
            if not isinstance(over, dict):
                raise ConfigError(f"compare.overrides.{name} must be a mapping of train options, got {over!r}")
            if name not in self.runs:
                raise ConfigError(f"compare.overrides names run {name!r}, which is not in compare.runs")


@dataclass
class RecipeConfig:
    """A whole pipeline run: prepare, search, train every comparison run, evaluate, report."""

    #: Options of each section that the pipeline sets itself.
    OWNED: ClassVar[dict[str, frozenset[str]]] = {
        "data": frozenset({"tokenizer", "out", "progress"}),
        "search": frozenset({"teacher", "data", "out", "resume", "bins"}),
        "train": frozenset({"teacher", "data", "out", "student", "resume", "target_loss"}),
        "eval": frozenset({"checkpoint", "data", "text", "split", "json_out", "tasks", "limit"}),
        "extract": frozenset({"teacher", "out", "spec", "layers", "hidden", "kv_groups", "heads_per_group", "mlp",
                              "mode", "calib", "cache"}),
    }

    teacher: str = option("builtin:smollm2-135m", TEACHER_HELP)
    out: str = option("runs/headstart", "output directory")
    seed: int = option(0, "seed of the search, the students' init and the data order (sections may override)")
    data: PrepareConfig = option(PrepareConfig(inputs=["builtin:shakespeare"]), "the prepare stage")
    search: SearchConfig = option(SearchConfig(), "the search stage")
    extract: ExtractConfig = option(ExtractConfig(), "how the sub-network students are cut (reconstruction; "
                                    "calibration windows come from the train split)")
    train: TrainConfig = option(TrainConfig(), "the training runs (shared by every comparison run)")
    compare: CompareConfig = option(CompareConfig(), "the comparison")
    eval: EvalConfig = option(EvalConfig(windows=64, seq_len=256), "the evaluation of every trained student")

    def __post_init__(self) -> None:
        if not self.data.inputs:
            raise ConfigError("data.inputs is empty; list files, directories or builtin:shakespeare")
        if self.search.params is None:
            raise ConfigError("the recipe needs search.params: the students' parameter budget(s), e.g. 50M")
        check_choice(self.compare.runs, tuple(RUNS), "compare.runs")
        if "rung-kd" in self.compare.runs:
            rung = self.search.rung_tokens * self.search.rung_eta ** max(0, self.search.rungs - 1)
            if not self.search.rungs:
                raise ConfigError("compare run rung-kd continues the search's rung winner; set search.rungs >= 1")
            if rung >= self.train.tokens:
                raise ConfigError(f"compare run rung-kd: the rung winner has trained {rung:,} tokens, not fewer than "
                                  f"train.tokens {self.train.tokens:,}; lower search.rung_tokens or raise train.tokens")
        for budget in self.budgets():
            for name in self.compare.runs:
                self.train_config(name, budget, Path(self.out) / "students" / "-.yaml")

    # -- what the pipeline derives ---------------------------------------------------------------
    def budgets(self) -> list[int]:
        """The parameter budgets of ``search.params``, in order."""
        return budgets(self.search.params or "")

    def train_config(self, name: str, label: str | int, spec: Path) -> TrainConfig:
        """The :class:`TrainConfig` of comparison run ``name`` of budget ``label``, starting from ``spec``."""
        init, distill = RUNS[name]
        inherited = (self.compare.inherited or {}) if init != "random" else {}
        values = dataclasses.asdict(self.train)
        if init != "random":
            values["batch_size"] = max(1, round(self.train.batch_size * self.compare.inherited_batch))
        values = merge(values, normalize(TrainConfig, inherited))
        values = merge(values, normalize(TrainConfig, self.compare.overrides.get(name) or {}))
        if not distill:
            values["kd"] = "none"
        elif values.get("kd") == "none":
            raise ConfigError(f"run {name} distills, but train.kd is 'none'; set train.kd (e.g. forward)")
        values.update(data=str(Path(self.out) / "data"), out=str(Path(self.out) / "runs" / str(label) / name),
                      student=f"random:{spec}" if init == "random" else str(spec), teacher=self.teacher,
                      resume=False, target_loss=values.get("target_loss"))
        prefix = (f"compare.overrides.{name}." if name in self.compare.overrides
                  else "compare.inherited." if inherited else "train.")
        return build(TrainConfig, values, prefix=prefix)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as saved beside the outputs (a recipe that loads again: no pipeline-owned keys)."""
        data = dataclasses.asdict(self)
        for section, owned in self.OWNED.items():
            data[section] = {k: v for k, v in data[section].items() if k not in owned}
        return data


def load_recipe(data: dict[str, Any], where: str = "recipe", overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """A validated :class:`RecipeConfig` from a mapping (a YAML file's content) and flag overrides.

    The top-level ``seed`` flows into the search and train sections unless they set their own.
    """
    values = merge(normalize(RecipeConfig, data), overrides or {})
    if not isinstance(values.get("seed", 0), (int, float, str)):
        raise ConfigError(f"seed in {where} must be an integer")
    for section in ("search", "train"):
        part = values.get(section)
        if part is None or isinstance(part, dict):
            values[section] = {"seed": values.get("seed", 0), **(part or {})}
    _scale_rungs(values["search"], values.get("train") or {}, values.get("compare"))
    return build(RecipeConfig, values, where=where)


def _scale_rungs(search: Any, train: Any, compare: Any) -> None:
    """Rungs the search section leaves unset follow the final training: rung 1 trains 1 % of ``train.tokens``,
    on the schedule of the runs that start from the teacher's weights (``compare.inherited``)."""
    if not isinstance(search, dict):
        return
    if isinstance(train, dict) and "rung_tokens" not in search:
        try:  # a bad train.tokens is reported when the recipe is built
            search["rung_tokens"] = max(1024, int(float(train.get("tokens", TrainConfig.tokens))) // 100)
        except (TypeError, ValueError):
            pass
    inherited = compare.get("inherited", INHERITED) if isinstance(compare, dict) else INHERITED
    for key in ("lr", "warmup"):
        value = inherited.get(key) if isinstance(inherited, dict) else None
        valid = isinstance(value, (int, float)) and (value > 0 or (key == "warmup" and value == 0))
        if valid and f"rung_{key}" not in search:  # a bad value is reported under compare.inherited
            search[f"rung_{key}"] = value


def read_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """Read and validate a recipe YAML file (``overrides``: nested values from flags, which win)."""
    return load_recipe(read_yaml(path, "recipe"), where=str(path), overrides=overrides)
