"""``headstart search``: find the best sub-network of a teacher in each parameter budget."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import fields

from headstart.search.evolve import STRATEGIES
from headstart.search.space import GRANULARITIES, ORDERS

HELP = "search the best sub-network of the teacher in each parameter budget (evolution inside parameter bins)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart search``."""
    p.add_argument("--teacher", required=True, help="model directory, .gguf file, hub id, or builtin:smollm2-135m")
    p.add_argument("--data", required=True, help="directory prepared by `headstart prepare` (its search split)")
    p.add_argument("--out", required=True, help="output directory: journal, best spec per bin, summary, plot")
    budget = p.add_argument_group("budgets (one of)")
    budget.add_argument("--params", help="parameter budgets, comma-separated (e.g. 40M,60M)")
    budget.add_argument("--tolerance", type=float, default=0.05, help="relative width of each budget's bin (±)")
    budget.add_argument("--bins", type=int, help="N equal-width bins between the space's smallest and largest point")
    space = p.add_argument_group("search space")
    space.add_argument("--space", help="search space YAML (layers/hidden/kv_groups/heads_per_group/mlp ranges, "
                       "depth_modes, granularity); defaults come from the teacher")
    space.add_argument("--granularity", choices=GRANULARITIES, default=None,
                       help="coarse: sizes only; fine: also which indices per layer (default: the space's, coarse)")
    space.add_argument("--order", choices=ORDERS, default="importance",
                       help="which indices a size keeps: the most important (default) or the leading ones (whittle)")
    algo = p.add_argument_group("search")
    algo.add_argument("--strategy", choices=STRATEGIES, default="evolution", help="evolution or random sampling")
    algo.add_argument("--evaluations", type=int, default=40, help="evaluations per bin (per run)")
    algo.add_argument("--time-limit", type=float, help="wall-clock seconds per run")
    algo.add_argument("--population", type=int, default=8, help="population per bin")
    algo.add_argument("--seed", type=int, default=0, help="seed of the search (the fitness windows are fixed)")
    algo.add_argument("--baselines", action="store_true",
                      help="also run random sampling (importance order) and random first-k (whittle) baselines")
    algo.add_argument("--resume", action="store_true", help="continue the journal in --out without re-evaluating")
    fit = p.add_argument_group("fitness")
    fit.add_argument("--windows", type=int, default=16, help="search-split windows per evaluation")
    fit.add_argument("--seq-len", type=int, default=256, help="tokens per window")
    fit.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    fit.add_argument("--calibration-windows", type=int, default=32, help="train-split windows for importance")
    fit.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                     help="autocast dtype (default: bfloat16 on CUDA, float32 on CPU)")
    fit.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


class _Progress:
    """Live progress: evaluations, best loss per bin, evaluations per minute."""

    def __init__(self) -> None:
        self.bar = None
        self.run = None

    def __call__(self, run, states, cand) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc="search", unit="eval")
        now = time.perf_counter()
        if run != self.run:  # rate since this run's first evaluation
            self.run, self.first, self.count = run, now, 0
        self.count += 1
        rate = 60.0 * (self.count - 1) / (now - self.first) if self.count > 1 and now > self.first else 0.0
        best = " ".join(f"{s.best.loss:.3f}" if s.best is not None else "-" for s in states)
        self.bar.set_postfix_str(f"{run} best/bin [{best}] {rate:.1f} eval/min")
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Run the search and print the summary table and output paths."""
    from headstart import parallel
    from headstart.search.pipeline import SearchJob, run_job
    from headstart.search.report import table

    job = SearchJob(**{f.name: getattr(args, f.name) for f in fields(SearchJob) if hasattr(args, f.name)})
    progress = _Progress() if parallel.rank() == 0 else None
    try:
        outcome = run_job(job, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if parallel.is_main():
        print(table(outcome))
        for name, path in outcome.files.items():
            print(f"{name}: {path}")
    parallel.destroy()
    return 0
