"""The search stage: teacher + data -> importance -> space -> bins -> runs -> rungs -> outputs.

:func:`check` refuses what would fail later (paths, device, window length, space) before the teacher
loads; :func:`run` does the search. Runs are named ``<strategy>/<order>``. The main run is
``evolution.strategy``/``space.order``; with ``evolution.baselines`` the same job also runs random
sampling in importance order and random sampling with first-k slicing and prefix layers (whittle's
setting), with the same evaluations per bin, so the comparison is honest. All runs share one
journal and one fitness cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from headstart import parallel, preflight
from headstart.config.search import SearchConfig, SearchPaths
from headstart.errors import CheckpointError, ConfigError
from headstart.importance import data_fingerprint, load_or_compute_importance
from headstart.io import write_json, write_yaml
from headstart.locking import main_process_lock
from headstart.progress import Progress
from headstart.searching.bins import BinTable, SizeGrid, make_bins
from headstart.searching.evolve import Evaluator, run_search
from headstart.searching.fitness import Fitness
from headstart.searching.journal import Journal
from headstart.searching.outcome import RunOutcome, SearchOutcome
from headstart.searching.report import plot, summary
from headstart.searching.rungs import run_rungs, winner
from headstart.searching.space import SearchSpace, SpaceDefinition, load_space
from headstart.selection import Orders
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher, load_teacher, model_config

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
WHITTLE_RUN = "random/first-k"


def runs_of(cfg: SearchConfig) -> list[tuple[str, str]]:
    """``(strategy, order)`` of every run of a search: the main one first, then the baselines."""
    runs = [(cfg.evolution.strategy, cfg.space.order)]
    if cfg.evolution.baselines:
        runs += [r for r in (("random", "importance"), ("random", "first-k")) if r not in runs]
    return runs


def _device(name: str) -> torch.device:
    if name == "auto":
        return parallel.device()
    return torch.device(name)


def load_windows(paths: SearchPaths, cfg: SearchConfig, teacher: Teacher) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fixed ``search`` windows and (if importance is needed) ``train`` calibration windows."""
    from headstart.calibration import calibration_tokens
    from headstart.data import check_tokenizer, fixed_windows

    if teacher.tokenizer is not None:
        check_tokenizer(paths.data, teacher.tokenizer)
    # the windows do not depend on the search seed, so searches with different seeds share one fitness
    windows = fixed_windows(paths.data, "search", cfg.seq_len, cfg.fitness.windows, seed=0)
    calib = None
    if any(order == "importance" for _, order in runs_of(cfg)):
        calib = calibration_tokens(paths.data, teacher.tokenizer, n=cfg.fitness.calibration_windows,
                                   seq_len=cfg.seq_len, seed=0)
    return windows, calib


def _orders(teacher: Teacher, calib: torch.Tensor | None, progress: Progress | None) -> dict[str, Orders]:
    orders = {"first-k": Orders.first_k(teacher.dims)}
    if calib is not None:
        imp = load_or_compute_importance(teacher, calib, progress=progress)
        orders["importance"] = Orders.from_importance(teacher.dims, imp)
    return orders


def _space_fingerprint(config: SpaceDefinition, tables: list[BinTable], orders: dict[str, Orders]) -> str:
    data = {
        "space": config.to_dict(),
        "bins": [t.bin.to_dict() for t in tables],
        "orders": {k: hashlib.sha256(repr(asdict(o)).encode()).hexdigest()[:16] for k, o in sorted(orders.items())},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _warn_idle(cfg: SearchConfig, bins: int) -> None:
    """Warn when a generation has fewer candidates than there are processes to score them."""
    size = cfg.evolution.children
    if parallel.world_size() > size * bins and parallel.is_main():
        log.warning("%d processes but %d candidates per generation (%d bins x generation size %d): %d process(es) "
                    "idle; raise evolution.generation_size to use them", parallel.world_size(), size * bins, bins,
                    size, parallel.world_size() - size * bins)


def check(paths: SearchPaths, cfg: SearchConfig) -> None:
    """Output path, device, data, budgets, window length and space, before the teacher loads."""
    preflight.out_path(paths.out)
    if (Path(paths.out) / JOURNAL).exists() and not paths.resume:
        raise CheckpointError(f"{Path(paths.out) / JOURNAL} already exists; pass --resume to continue that search "
                              "or choose another --out")
    preflight.device(cfg.device)
    preflight.data_dir(paths.data)
    check_options(model_config(paths.teacher), cfg)


def check_options(config: Any, cfg: SearchConfig) -> list[BinTable]:
    """What the teacher's config decides: the window length, the space and its layout, and whether every
    budget's bin holds a legal student (its bins, in first-k order)."""
    from headstart.models import get_adapter

    adapter = get_adapter(config)
    preflight.seq_len(config, cfg.seq_len, "the teacher", flag="search.seq_len")
    space = load_space(cfg.space.file, adapter.dims, cfg.space.granularity, cfg.space.layout)
    if space.layout == "layer-wise" and not adapter.layerwise:
        raise ConfigError(f"space.layout layer-wise: {config.model_type} students keep the same sizes in every "
                          "layer; use layout uniform, or a Llama-family teacher")
    grid = SizeGrid(SearchSpace(space, adapter, Orders.first_k(adapter.dims)))
    return make_bins(grid, cfg.budgets(), cfg.tolerance, cfg.bins)


def run(paths: SearchPaths, cfg: SearchConfig, teacher: Teacher | None = None,
        progress: Progress | None = None) -> SearchOutcome:
    """Run (or resume) the search; writes the journal, the best spec per bin, a summary and a plot to
    ``paths.out``. ``teacher`` may pass the already loaded teacher; ``progress`` hears of every phase."""
    cfg = cfg.filled()
    check(paths, cfg)
    parallel.init()
    out = Path(paths.out)
    if teacher is None:
        teacher = load_teacher(paths.teacher, device=str(_device(cfg.device)))
    windows, calib = load_windows(paths, cfg, teacher)
    orders = _orders(teacher, calib, progress)
    space_def = load_space(cfg.space.file, teacher.dims, cfg.space.granularity, cfg.space.layout)
    main_space = SearchSpace(space_def, teacher.adapter, orders[cfg.space.order])
    tables = make_bins(SizeGrid(main_space), cfg.budgets(), cfg.tolerance, cfg.bins)
    _warn_idle(cfg, len(tables))
    header = _header(paths, cfg, teacher, windows, space_def, tables, orders)
    with main_process_lock(out):  # one writer per search directory (created here)
        parallel.barrier()
        fitness = Fitness(teacher, windows, batch_size=cfg.batch_size, dtype=cfg.dtype, screen=cfg.fitness)

        def counter(spec: SubnetSpec) -> tuple[int, int]:
            c = teacher.adapter.counts(spec.shape, cfg.seq_len)
            return c.params, c.flops_per_token

        runs: list[RunOutcome] = []
        with Journal(out / JOURNAL, header, resume=paths.resume, write=parallel.is_main()) as journal:
            evaluator = Evaluator(fitness, counter, journal)
            for strategy, order in runs_of(cfg):
                space = _space_of(cfg, space_def, teacher, orders, strategy, order, main_space)
                name = f"{strategy}/{order}"
                computed, start = evaluator.computed, time.perf_counter()
                states = run_search(space, tables, evaluator, replace(cfg.evolution, strategy=strategy), cfg.seed, name,
                                    progress)
                runs.append(RunOutcome(name, strategy, order, states, evaluator.computed - computed,
                                       time.perf_counter() - start, evaluator.flops.get(name, 0)))
        outcome = SearchOutcome(cfg, tables, runs, teacher.source, out)
        if calib is not None:
            outcome.importance_flops = teacher.adapter.counts(seq_len=calib.shape[-1]).flops_per_token * calib.numel()
        outcome.rungs = run_rungs(runs[0].bins, cfg, teacher, paths.data, windows, out / "rungs", paths.resume,
                                  progress)
        if parallel.is_main():
            write_outputs(outcome, teacher, space_def)
        parallel.barrier()
        return outcome


def _space_of(cfg: SearchConfig, space_def: SpaceDefinition, teacher: Teacher, orders: dict[str, Orders],
              strategy: str, order: str, main: SearchSpace) -> SearchSpace:
    """The space of one run: the main run's, or a baseline's order (whittle's: first-k *and* prefix layers)."""
    if (strategy, order) == (cfg.evolution.strategy, cfg.space.order):
        return main
    if f"{strategy}/{order}" == WHITTLE_RUN:
        return SearchSpace(replace(space_def, depth_modes=("top",)), teacher.adapter, orders["first-k"])
    return SearchSpace(space_def, teacher.adapter, orders[order])


def _header(paths: SearchPaths, cfg: SearchConfig, teacher: Teacher, windows: torch.Tensor,
            space_def: SpaceDefinition, tables: list, orders: dict) -> dict:
    """The journal's header: what a resumed search must match (teacher, data, space, seed, strategy)."""
    return {
        "teacher": teacher.fingerprint, "data": data_fingerprint(windows),
        "space": _space_fingerprint(space_def, tables, orders), "seed": cfg.seed,
        "search": {"strategy": cfg.evolution.strategy, "order": cfg.space.order,
                   "population": cfg.evolution.population, "generation_size": cfg.evolution.children},
        "teacher_source": teacher.source, "data_dir": str(Path(paths.data).resolve()),
        "space_config": space_def.to_dict(), "bins": [t.bin.to_dict() for t in tables], "seq_len": cfg.seq_len,
        "windows": cfg.fitness.windows,
    }


def write_outputs(outcome: SearchOutcome, teacher: Teacher, config: SpaceDefinition) -> None:
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
