"""``headstart search``: the budgets, the space, the evolution, the fitness and the training-aware rungs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from headstart.config.common import DTYPE_HELP, DTYPES, ORDERS, TEACHER_HELP, check_device, check_local
from headstart.config.fields import SEED, FieldError, Section, option, parse_size
from headstart.config.train import INHERITED_LR, INHERITED_WARMUP

STRATEGIES = ("evolution", "random")
GRANULARITIES = ("coarse", "fine")
LAYOUTS = ("uniform", "layer-wise")
#: The screen's windows and the rungs where neither the options nor a recipe's setup share set them.
STANDALONE = {"windows": 16, "count": 2, "candidates": 4, "tokens": 25_000}


@dataclass
class SearchPaths(Section):
    """Where ``headstart search`` reads and writes."""

    teacher: str = option(help=TEACHER_HELP)
    data: str = option(help="directory prepared by `headstart prepare` (its search split)")
    out: str = option(help="output directory: journal, best spec per bin, summary, plot")
    resume: bool = option(False, "continue the journal in --out without re-evaluating")

    def check(self) -> None:
        check_local("teacher", self.teacher)
        check_local("data", self.data, "dir")


@dataclass
class SpaceConfig(Section):
    """What a candidate may be."""

    file: str | None = option(None, "search space YAML (ranges of layers/hidden/kv_groups/heads_per_group/mlp, "
                              "depth_modes, granularity, layout); defaults come from the teacher")
    granularity: str | None = option(None, "coarse: sizes only; fine: also which indices per layer (default: the "
                                     "space file's, else coarse)", choices=GRANULARITIES)
    layout: str | None = option(None, "uniform: every layer keeps the same sizes; layer-wise: each layer its own "
                                "heads and MLP size (default: the space file's, else uniform)", choices=LAYOUTS)
    order: str = option("importance", "which indices a size keeps: the most important or the leading ones",
                        choices=ORDERS)


@dataclass
class EvolutionConfig(Section):
    """How candidates are proposed in each bin."""

    strategy: str = option("evolution", "evolution or random sampling", choices=STRATEGIES)
    evaluations: int = option(40, "evaluations per bin (per run)", ge=1)
    time_limit: float | None = option(None, "wall-clock seconds per run", gt=0)
    population: int = option(8, "population per bin", ge=2)
    aging: bool = option(False, "regularised (aging) evolution: the oldest member leaves the population, not the "
                         "worst")
    generation_size: int | None = option(None, "children per bin drawn together from the population and scored "
                                         "in parallel (under torchrun: over the ranks); 1: steady state; default: "
                                         "the population. The result does not depend on the number of ranks", ge=1)
    baselines: bool = option(False, "also run random sampling (importance order) and random first-k (whittle)")

    @property
    def children(self) -> int:
        """Candidates per bin and generation."""
        return self.generation_size or self.population


@dataclass
class FitnessConfig(Section):
    """How an untrained candidate is scored."""

    windows: int | None = option(None, "search-split windows per evaluation (default 16; in a recipe sized by its "
                                 "setup_share)", ge=1)
    calibration_windows: int = option(32, "train-split windows for the importance pass", ge=1)
    abandon_after: float = option(0.25, "score this share of the windows first and stop a candidate clearly worse "
                                  "than the population there (0: always score every window)", ge=0, lt=1)
    abandon_margin: float = option(0.1, "nats above the population's worst loss that count as clearly worse", ge=0)


@dataclass
class RungsConfig(Section):
    """Training-aware selection: successive halving over short training runs after the untrained screen."""

    count: int | None = option(None, "rungs of successive halving (0: rank by the untrained loss only; default 2, "
                               "in a recipe sized by its setup_share)", ge=0, le=8)
    candidates: int | None = option(None, "candidates per bin that train in rung 1 (default 4, in a recipe sized by "
                                    "its setup_share)", ge=1)
    tokens: int | None = option(None, "training tokens of rung 1 (rung r: tokens x eta^(r-1), each from the cut; "
                                "default 25k, in a recipe sized by its setup_share)", ge=1, le=2**40)
    eta: int = option(2, "halving factor: 1/eta of the candidates continue to the next rung", ge=2)
    lr: float = option(INHERITED_LR, "peak LR of the rung training (the schedule of a student cut from the teacher)",
                       gt=0)
    warmup: float = option(INHERITED_WARMUP, "warmup of the rung training: a fraction of the steps when < 1, else "
                           "steps", ge=0)

    def budget(self, rung: int) -> int:
        """Training tokens of a candidate's run in ``rung`` (1-based), from the cut."""
        return (self.tokens or STANDALONE["tokens"]) * self.eta ** (rung - 1)


@dataclass
class SearchConfig(Section):
    """``headstart search``: the best sub-network of the teacher in each parameter budget."""

    params: str | None = option(None, "parameter budgets, comma-separated (e.g. 40M,60M)")
    tolerance: float = option(0.05, "relative half-width of each budget's bin", ge=0, lt=1)
    bins: int | None = option(None, "instead of --params: N equal-width bins over the space's range", ge=1, le=1000)
    seed: int = option(0, "seed of the search (the fitness windows are fixed)", **SEED)
    seq_len: int = option(256, "tokens per window", ge=2)
    batch_size: int = option(4, "windows per forward pass", ge=1)
    dtype: str = option("auto", DTYPE_HELP, choices=DTYPES)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    space: SpaceConfig = option(SpaceConfig, "the search space")
    evolution: EvolutionConfig = option(EvolutionConfig, "the proposals")
    fitness: FitnessConfig = option(FitnessConfig, "the untrained screen")
    rungs: RungsConfig = option(RungsConfig, "the training-aware rungs")

    def check(self) -> None:
        if self.params is not None and self.bins is not None:
            raise FieldError("params", "and bins exclude each other; give either --params (e.g. 40M,60M) or --bins N")
        if self.params is not None:
            budgets(self.params)
        check_device(self.device)

    def filled(self) -> SearchConfig:
        """This search with every unset screen and rung setting at :data:`STANDALONE`."""
        fitness = self.fitness if self.fitness.windows is not None else dataclasses.replace(
            self.fitness, windows=STANDALONE["windows"])
        unset = {k: STANDALONE[k] for k in ("count", "candidates", "tokens") if getattr(self.rungs, k) is None}
        rungs = dataclasses.replace(self.rungs, **unset) if unset else self.rungs
        return dataclasses.replace(self, fitness=fitness, rungs=rungs)

    def budgets(self) -> list[int] | None:
        """The parameter budgets of ``params`` (``None`` with ``bins``); :class:`FieldError` without either."""
        if (self.params is None) == (self.bins is None):
            raise FieldError("params", "is missing; give exactly one of --params (e.g. 40M,60M) or --bins N")
        return budgets(self.params) if self.params is not None else None


def budgets(text: str | int | float) -> list[int]:
    """``"40M,60M"`` / ``"1.5B"`` / ``"500k"`` / ``123456`` -> parameter counts."""
    out = []
    for part in str(text).split(","):
        value = parse_size(part)
        if value is None or value != value or value in (float("inf"), float("-inf")):
            raise FieldError("params", f"cannot read the budget {part.strip()!r}; write e.g. 40M, 1.5B or 500k")
        if value < 1 or value > 10**13:
            raise FieldError("params", f"budget {part.strip()!r} must lie between 1 and 10T parameters")
        out.append(int(round(value)))
    return out
