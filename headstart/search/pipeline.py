"""One search job end to end: teacher + data -> importance -> space -> bins -> runs -> outputs.

Runs are named ``<strategy>/<order>``. The main run is ``--strategy``/``--order``; with
``baselines`` the same command also runs random sampling in importance order and random sampling
with first-k slicing and prefix layers (whittle's setting), with the same evaluations per bin, so
the comparison is honest. All runs share one journal and one fitness cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from headstart import parallel
from headstart.configs import SearchConfig
from headstart.configs import budgets as parse_params
from headstart.errors import CheckpointError
from headstart.importance import data_fingerprint, load_or_compute_importance
from headstart.io import write_json, write_yaml
from headstart.progress import Progress
from headstart.search.bins import BinTable, SizeGrid, make_bins
from headstart.search.evolve import Evaluator, ProgressFn, SearchSettings, run_search
from headstart.search.fitness import Fitness
from headstart.search.journal import Journal
from headstart.search.outcome import RunOutcome, SearchOutcome
from headstart.search.report import plot, summary
from headstart.search.rungs import RungSettings, run_rungs, winner
from headstart.search.space import SearchSpace, SpaceConfig, load_space
from headstart.selection import Orders
from headstart.teacher import Teacher, load_teacher

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
WHITTLE_RUN = "random/first-k"


def runs_of(cfg: SearchConfig) -> list[tuple[str, str]]:
    """``(strategy, order)`` of every run of a search: the main one first, then the baselines."""
    runs = [(cfg.strategy, cfg.order)]
    if cfg.baselines:
        runs += [r for r in (("random", "importance"), ("random", "first-k")) if r not in runs]
    return runs


def _device(name: str) -> torch.device:
    if name == "auto":
        return parallel.device()
    return torch.device(name)


def load_windows(job: SearchConfig, teacher: Teacher) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fixed ``search`` windows and (if importance is needed) ``train`` calibration windows."""
    from headstart.calibration import calibration_tokens
    from headstart.data import check_tokenizer, fixed_windows

    if teacher.tokenizer is not None:
        check_tokenizer(job.data, teacher.tokenizer)
    # the windows do not depend on the search seed, so searches with different seeds share one fitness
    windows = fixed_windows(job.data, "search", job.seq_len, job.windows, seed=0)
    calib = None
    if any(order == "importance" for _, order in runs_of(job)):
        calib = calibration_tokens(job.data, teacher.tokenizer, n=job.calibration_windows, seq_len=job.seq_len,
                                   seed=0)
    return windows, calib


def _orders(teacher: Teacher, calib: torch.Tensor | None, progress: Progress | None) -> dict[str, Orders]:
    orders = {"first-k": Orders.first_k(teacher.dims)}
    if calib is not None:
        imp = load_or_compute_importance(teacher, calib, progress=progress)
        orders["importance"] = Orders.from_importance(teacher.dims, imp)
    return orders


def _space_fingerprint(config: SpaceConfig, tables: list[BinTable], orders: dict[str, Orders]) -> str:
    data = {
        "space": config.to_dict(),
        "bins": [t.bin.to_dict() for t in tables],
        "orders": {k: hashlib.sha256(repr(asdict(o)).encode()).hexdigest()[:16] for k, o in sorted(orders.items())},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _warn_idle(job: SearchConfig, bins: int) -> None:
    """Warn when a generation has fewer candidates than there are processes to score them."""
    size = job.generation_size or job.population
    if parallel.world_size() > size * bins and parallel.is_main():
        log.warning("%d processes but %d candidates per generation (%d bins x generation size %d): %d process(es) "
                    "idle; raise --generation-size to use them", parallel.world_size(), size * bins, bins, size,
                    parallel.world_size() - size * bins)


def run_job(job: SearchConfig, teacher: Teacher | None = None, progress: ProgressFn | None = None,
            calibration: Progress | None = None) -> SearchOutcome:
    """Run a search job; writes the journal, the best spec per bin, a summary and a plot to ``job.out``.

    ``progress`` hears of every evaluation, ``calibration`` of the importance pass.
    """
    parallel.init()
    out = Path(job.out)
    if (out / JOURNAL).exists() and not job.resume:  # every rank decides alike, before anything is written
        raise CheckpointError(f"{out / JOURNAL} already exists; pass --resume to continue that search or choose "
                              "another --out")
    if teacher is None:
        teacher = load_teacher(job.teacher, device=str(_device(job.device)))
    windows, calib = load_windows(job, teacher)
    orders = _orders(teacher, calib, calibration)
    config = load_space(job.space, teacher.dims, job.granularity, job.layout)
    main_space = SearchSpace(config, teacher.adapter, orders[job.order])
    grid = SizeGrid(main_space)
    budgets = parse_params(job.params) if job.params is not None else None
    job.check_budget()
    tables = make_bins(grid, budgets, job.tolerance, job.bins)
    _warn_idle(job, len(tables))
    header = _header(job, teacher, windows, config, tables, orders)
    if parallel.is_main():
        out.mkdir(parents=True, exist_ok=True)
    parallel.barrier()
    fitness = Fitness(teacher, windows, batch_size=job.batch_size, dtype=job.dtype,
                      abandon_after=job.abandon_after, abandon_margin=job.abandon_margin)

    def counter(spec):
        c = teacher.adapter.counts(spec.shape, job.seq_len)
        return c.params, c.flops_per_token

    runs: list[RunOutcome] = []
    with Journal(out / JOURNAL, header, resume=job.resume, write=parallel.is_main()) as journal:
        evaluator = Evaluator(fitness, counter, journal)
        for strategy, order in runs_of(job):
            space = main_space if order == job.order else SearchSpace(config, teacher.adapter, orders[order])
            name = f"{strategy}/{order}"
            if name == WHITTLE_RUN and (strategy, order) != (job.strategy, job.order):
                # whittle's setting: first-k slicing *and* prefix layers
                space = SearchSpace(replace(config, depth_modes=("top",)), teacher.adapter, orders["first-k"])
            settings = SearchSettings(strategy=strategy, population=job.population, evaluations=job.evaluations,
                                      time_limit=job.time_limit, seed=job.seed, aging=job.aging,
                                      generation_size=job.generation_size)
            computed, start = evaluator.computed, time.perf_counter()
            states = run_search(space, tables, evaluator, settings, name, progress)
            runs.append(RunOutcome(name, strategy, order, states, evaluator.computed - computed,
                                   time.perf_counter() - start, evaluator.flops.get(name, 0)))
    outcome = SearchOutcome(job, tables, runs, teacher.source, out)
    if calib is not None:
        outcome.importance_flops = teacher.adapter.counts(seq_len=calib.shape[-1]).flops_per_token * calib.numel()
    rung_settings = RungSettings(job.rungs, job.rung_candidates, job.rung_tokens, job.rung_eta, job.seed, job.dtype,
                                 job.batch_size, job.rung_lr, job.rung_warmup)
    outcome.rungs = run_rungs(runs[0].bins, rung_settings, teacher, str(job.data), windows, out / "rungs",
                              job.seq_len, job.resume)
    if parallel.is_main():
        write_outputs(outcome, teacher, config)
    parallel.barrier()
    return outcome


def _header(job: SearchConfig, teacher: Teacher, windows: torch.Tensor, config: SpaceConfig, tables: list,
            orders: dict) -> dict:
    """The journal's header: what a resumed search must match (teacher, data, space, seed, strategy)."""
    return {
        "teacher": teacher.fingerprint, "data": data_fingerprint(windows),
        "space": _space_fingerprint(config, tables, orders), "seed": job.seed,
        "search": {"strategy": job.strategy, "order": job.order, "population": job.population,
                   "generation_size": job.generation_size or job.population},
        "teacher_source": teacher.source, "data_dir": str(job.data), "space_config": config.to_dict(),
        "bins": [t.bin.to_dict() for t in tables], "seq_len": job.seq_len, "windows": job.windows,
    }


def write_outputs(outcome: SearchOutcome, teacher: Teacher, config: SpaceConfig) -> None:
    """Best spec per bin (YAML), the resolved space, ``summary.json`` and the plot."""
    out, main = outcome.out, outcome.runs[0]
    files: dict[str, Path] = {}
    write_yaml(out / "space.yaml", config.to_dict())
    for state in main.bins:
        trained = winner(outcome.rungs.get(state.table.bin.label, []))
        best = trained.candidate if trained is not None else state.best
        if best is None:
            continue
        extra = {
            "teacher": teacher.source, "teacher_fingerprint": teacher.fingerprint, "bin": state.table.bin.to_dict(),
            "params": best.params, "flops_per_token": best.flops, "loss": best.loss, "run": main.name,
            "evaluations": len(state.candidates), "genome": best.genome.to_dict(),
        }
        if trained is not None:  # chosen by its search-split loss after the last rung's training
            extra.update({"trained_loss": trained.loss, "rung_tokens": trained.tokens,
                          "rung_student": str(trained.student)})
        files[state.table.bin.label] = best.spec.save(out / f"best-{state.table.bin.label}.yaml", extra=extra)
    data = summary(outcome)
    files["summary"] = write_json(out / "summary.json", data)
    png = plot(outcome, out / "search.png")
    if png is not None:
        files["plot"] = png
    outcome.files = files
