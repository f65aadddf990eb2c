"""How much a recipe's search may spend, and what that buys: the screen's windows and the training-aware rungs.

The rule (``setup_share`` of a recipe, 2 % by default, so that the setup stays small beside the training
the head start saves): the importance pass, the untrained screen and the
rungs together spend at most ``setup_share`` of the FLOPs that training one student for the whole
``train.tokens`` costs with the recipe's loss (``3 x`` the student's forward per token, plus the teacher's
forward for the distilled share). Estimated from the analytic counts before anything runs:

* the student's forward FLOPs per token are the teacher's scaled by the bin's parameter budget;
* the importance pass is fixed (``fitness.calibration_windows x seq_len`` teacher tokens);
* the screen takes half of what is left: as many windows per evaluation as fit, between 2 and 16;
* the rungs take the rest: ``rungs.count`` rungs of successive halving over ``rungs.candidates`` candidates
  (2 rungs of 4, then 1 rung of 2), each candidate's run at least :data:`MIN_RUNG_STEPS` optimizer steps;
  when even the smallest plan does not fit, the rungs are skipped, and the plan says why. Every rung run
  distils from the teacher online, so each of its tokens costs the teacher's forward too.

A value the recipe's search section sets itself is kept (it overrides the rule); ``setup_share: null``
keeps the search's own defaults (:data:`~headstart.config.search.STANDALONE`), which standalone
``headstart search`` uses.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from headstart.config.recipe import RecipeConfig
from headstart.config.search import SearchConfig

log = logging.getLogger(__name__)

SCREEN_WINDOWS = (2, 16)  # fewest and most windows per evaluation the rule picks
RUNG_PLANS = ((2, 4), (1, 2))  # (rungs, rung-1 candidates), most thorough first
MIN_RUNG_STEPS = 8  # a rung run shorter than this ranks noise


@dataclass(frozen=True)
class SetupPlan:
    """What a recipe's search spends (FLOPs, estimated) and the settings that spend it."""

    budget: float  # the setup share of the training FLOPs
    training: float  # FLOPs of training one student for the whole budget with the recipe's loss
    importance: float
    screen: float
    rungs: float
    windows: int
    rung_count: int
    rung_candidates: int
    rung_tokens: int
    reason: str  # why the rungs are what they are

    @property
    def total(self) -> float:
        """Every setup FLOP."""
        return self.importance + self.screen + self.rungs

    def describe(self) -> str:
        """One line for the log and the report."""
        rungs = (f"{self.rung_count} rung(s) from {self.rung_candidates} candidates x {self.rung_tokens:,} tokens"
                 if self.rung_count else "no rungs")
        over = (f"; over the setup share of {self.budget:.3g} FLOPs: the importance pass and the screen's set or "
                "fewest windows cost more" if self.total > self.budget else "")
        share = self.total / self.training
        return (f"setup {self.total:.3g} FLOPs ({share:.1%} of a student's train FLOPs): importance "
                f"{self.importance:.3g}, screen {self.screen:.3g} ({self.windows} windows), {rungs}; {self.reason}"
                + over)


def plan_setup(recipe: RecipeConfig, teacher_config: Any) -> SetupPlan:
    """The setup plan of ``recipe`` for a teacher of ``teacher_config`` (analytic counts, no weights)."""
    from headstart.models import get_adapter

    search, train = recipe.search, recipe.train
    teacher = get_adapter(teacher_config).counts(seq_len=search.seq_len)
    per_param = teacher.flops_per_token / teacher.params
    budgets = recipe.budgets()
    student = per_param * max(budgets)  # forward FLOPs per token of the largest budget's student
    distill = recipe.train_config("searched-kd").kd.until if "searched-kd" in recipe.compare.runs else 0.0
    training = train.tokens * (3 * student + distill * teacher.flops_per_token)
    budget = (recipe.setup_share or 0.0) * training
    importance = float(teacher.flops_per_token * search.fitness.calibration_windows * search.seq_len)
    evaluations = search.evolution.evaluations * len(budgets) * (3 if search.evolution.baselines else 1)
    per_window = evaluations * search.seq_len * per_param * sum(budgets) / len(budgets)
    windows = search.fitness.windows or _clamp(int((budget - importance) / 2 // per_window), *SCREEN_WINDOWS)
    screen = windows * per_window
    flops, count, candidates, tokens, reason = _plan_rungs(search, budget - importance - screen, student,
                                                           teacher.flops_per_token, len(budgets))
    return SetupPlan(budget, training, importance, screen, flops, windows, count, candidates, tokens, reason)


def _plan_rungs(search: SearchConfig, room: float, student: float, teacher: float,
                bins: int) -> tuple[float, int, int, int, str]:
    """``(flops, count, candidates, tokens, reason)`` of the rungs that fit in ``room`` FLOPs."""
    rungs = search.rungs
    if rungs.count == 0:
        return 0.0, 0, 0, 0, "the rungs are off (search.rungs.count 0)"
    min_tokens = MIN_RUNG_STEPS * search.batch_size * search.seq_len
    plans = [(rungs.count or r, rungs.candidates or c) for r, c in RUNG_PLANS]
    for count, candidates in dict.fromkeys(plans):
        # every rung trains its survivors for tokens x eta^(r-1): candidates x tokens student tokens per rung
        # rung r trains candidates / eta^(r-1) survivors for tokens x eta^(r-1) each: candidates x tokens per rung
        runs_tokens = bins * candidates * count
        tokens = rungs.tokens or int(room / ((3 * student + teacher) * runs_tokens))
        if rungs.tokens is not None or tokens >= min_tokens:
            flops = (3 * student + teacher) * runs_tokens * tokens
            why = "the recipe's rung tokens" if rungs.tokens is not None else "rungs sized to the setup share"
            return flops, count, candidates, tokens, f"{why} ({count} x {candidates})"
    return 0.0, 0, 0, 0, (f"rungs skipped: the setup share buys fewer than {MIN_RUNG_STEPS} steps per candidate "
                          f"({min_tokens:,} tokens); raise setup_share or train.tokens, or set search.rungs")


def apply_plan(recipe: RecipeConfig, plan: SetupPlan) -> RecipeConfig:
    """``recipe`` with its search's unset screen windows and rungs taken from ``plan`` (the rest at
    :data:`~headstart.config.search.STANDALONE`)."""
    search = recipe.search
    fitness = dataclasses.replace(search.fitness, windows=plan.windows)
    sized = {"count": plan.rung_count}
    if plan.rung_count:
        sized.update(candidates=plan.rung_candidates, tokens=plan.rung_tokens)
    rungs = dataclasses.replace(search.rungs, **sized)
    return dataclasses.replace(recipe, search=dataclasses.replace(search, fitness=fitness, rungs=rungs).filled())


def resolve_setup(recipe: RecipeConfig, teacher_config: Any) -> tuple[RecipeConfig, SetupPlan | None]:
    """``recipe`` with every unset search setting decided: by the setup share's plan, or (``setup_share:
    null``) at the search's own defaults; and the plan, if any."""
    if recipe.setup_share is None:
        return dataclasses.replace(recipe, search=recipe.search.filled()), None
    plan = plan_setup(recipe, teacher_config)
    return apply_plan(recipe, plan), plan


def _clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))
