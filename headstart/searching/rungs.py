"""Training-aware selection: successive halving over short distillation runs, after the untrained screen.

The untrained loss ranks candidates cheaply but it is not what a user wants: the student that is
best *after* training. So the best ``candidates`` of each bin (by untrained loss, distinct
sub-networks) train for ``tokens`` tokens with the real train loop (same loss, optimizer and seed
rules as ``headstart train``), are scored on the search split, and the best ``1/eta`` of them
train again, from the cut, for ``tokens * eta`` tokens (rung 2), and so on for ``rungs`` rungs. The
winner is the best by search-split loss after its last rung; its trained weights may seed the final
training. Rungs train on the schedule of a student cut from the teacher (``rungs.lr`` 5e-4,
``rungs.warmup`` 1 %, as :data:`headstart.config.train.INHERITED`).

Each rung trains from the cut rather than continuing the previous rung's student: a continuation
restarts Adam with empty moments at the full learning rate on an already trained student, which can
diverge (docs/search.md shows a measured case); a full short schedule per rung costs
``eta / (eta - 1)`` times the tokens of the survivors and ranks them on one footing.

Every rung run lives in ``OUT/rungs/<bin>/<spec hash>/rung<r>/`` and ends with ``rung.json``; a
rerun (``--resume``) skips finished rung runs (refusing one trained with other rung settings) and
resumes an interrupted one from its checkpoint, so a killed search reproduces the uninterrupted
result. Under torchrun the candidates of a rung are spread over the ranks
(:func:`headstart.parallel.spread`): each rank trains and scores its own candidates by itself,
single-process (no DDP), and the results are gathered on every rank, so the rungs' results and
winner are those of one process, for any number of ranks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from headstart import parallel
from headstart.config.search import SearchConfig
from headstart.errors import ConfigError
from headstart.io import write_json
from headstart.lm_loss import sum_cross_entropy
from headstart.progress import Progress, report
from headstart.searching.evolve import BinRun, Candidate

log = logging.getLogger(__name__)

RUNG_FILE = "rung.json"


@dataclass
class RungResult:
    """One candidate after one rung."""

    candidate: Candidate
    rung: int
    tokens: int  # trained from the cut
    loss: float  # search-split loss after training
    student: Path  # the exported trained student
    flops: int  # training FLOPs of this rung (student 3x forward + teacher forward) plus its scoring


def run_rungs(states: list[BinRun], cfg: SearchConfig, teacher: Any, data: str, windows: torch.Tensor,
              out: Path, resume: bool, progress: Progress | None = None) -> dict[str, list[RungResult]]:
    """Successive halving (``cfg.rungs``) over the best candidates of each bin; per bin label, every result,
    rung by rung (the last rung's best is the winner). A rung trains the candidates of every bin at once,
    spread over the ranks; ``progress`` hears of every finished candidate."""
    rungs = cfg.rungs
    if not rungs.count:
        return {}
    alive: dict[str, list[Candidate]] = {s.table.bin.label: _distinct(s.candidates)[: rungs.candidates]
                                         for s in states}
    results: dict[str, list[RungResult]] = {label: [] for label in alive}
    total = sum(len(c) for c in alive.values()) * sum(1 / rungs.eta ** (r - 1) for r in range(1, rungs.count + 1))
    done = 0
    for rung in range(1, rungs.count + 1):
        work = [(label, c) for label, cands in alive.items() for c in cands]

        def train_one(item: tuple[str, Candidate], rung: int = rung) -> dict[str, Any]:
            label, cand = item
            return _train_one(cand, rung, cfg, teacher, data, windows, out / label, resume)

        report(progress, "rungs", done, round(total), f"rung {rung}: {len(work)} candidates x "
               f"{rungs.budget(rung):,} tokens")
        records = parallel.spread(train_one, work, costs=[c.flops for _, c in work])
        done += len(work)
        for label in alive:
            scored = [RungResult(c, rung, int(r["tokens"]), float(r["loss"]), Path(r["student"]), int(r["flops"]))
                      for (lab, c), r in zip(work, records) if lab == label]
            results[label] += scored
            scored.sort(key=lambda r: (r.loss, r.candidate.spec_hash))
            log.info("%s rung %d: %s", label, rung, ", ".join(f"{r.loss:.3f}" for r in scored))
            alive[label] = [r.candidate for r in scored[: max(1, len(scored) // rungs.eta)]]
        report(progress, "rungs", done, round(total), f"rung {rung} done")
    return results


def _distinct(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates by untrained loss, each sub-network once."""
    seen, out = set(), []
    for cand in sorted(candidates, key=lambda c: (c.loss, c.spec_hash)):
        if cand.spec_hash not in seen:
            seen.add(cand.spec_hash)
            out.append(cand)
    return out


def winner(results: list[RungResult]) -> RungResult | None:
    """The best candidate of the last rung."""
    if not results:
        return None
    last = max(r.rung for r in results)
    return min((r for r in results if r.rung == last), key=lambda r: (r.loss, r.candidate.spec_hash))


def _train_one(cand: Candidate, rung: int, cfg: SearchConfig, teacher: Any, data: str, windows: torch.Tensor,
               root: Path, resume: bool) -> dict[str, Any]:
    """Train one candidate through one rung in this process alone (under :func:`headstart.parallel.solo`)
    and score it on every window; its ``rung.json`` record (read back when it is already there)."""
    from headstart.teacher import load_model
    from headstart.training import stage as train_stage

    run_dir = root / cand.spec_hash / f"rung{rung}"
    done = run_dir / RUNG_FILE
    tokens = cfg.rungs.budget(rung)
    trained_with = {"tokens": tokens, "seq_len": cfg.seq_len, "batch_size": cfg.batch_size, "lr": cfg.rungs.lr,
                    "warmup": cfg.rungs.warmup, "seed": cfg.seed, "dtype": cfg.dtype}
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("trained_with") != trained_with:
            raise ConfigError(f"{done} was trained with other rung settings ({record.get('trained_with')}, now "
                              f"{trained_with}); rerun with those settings or delete {root.parent} to retrain")
        return record
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file = run_dir.parent / "spec.yaml"
    if not spec_file.is_file():
        cand.spec.save(spec_file)
    paths, train_cfg = _rung_job(cfg, tokens, str(spec_file), teacher.source, data, run_dir, resume)
    summary = train_stage.run(paths, train_cfg, teacher=teacher).summary
    s, n = sum_cross_entropy(load_model(run_dir / "student").to(next(teacher.model.parameters()).device), windows)
    record = {"spec_hash": cand.spec_hash, "rung": rung, "tokens": tokens, "trained_with": trained_with,
              "loss": s / n, "untrained_loss": cand.loss,
              "flops": summary["student_train_flops"] + summary["teacher_flops"] + cand.flops * n,
              "student": str(run_dir / "student")}
    write_json(done, record)
    return record


def _rung_job(cfg: SearchConfig, tokens: int, spec: str, teacher: str, data: str, run_dir: Path,
              resume: bool) -> tuple[Any, Any]:
    """The paths and options of one rung's training run: distilled on the rung's schedule, no validation."""
    from headstart.config.train import TrainConfig, TrainPaths

    steps = max(1, tokens // (cfg.batch_size * cfg.seq_len))
    paths = TrainPaths(student=spec, data=data, out=str(run_dir), teacher=teacher,
                       resume=resume and (run_dir / "checkpoints").is_dir())
    train_cfg = TrainConfig(tokens=tokens, seq_len=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed,
                            optim={"lr": cfg.rungs.lr}, schedule={"warmup": cfg.rungs.warmup},
                            validation={"every": 0, "windows": 0}, checkpoint={"every": max(1, steps // 4), "keep": 1},
                            runtime={"dtype": cfg.dtype})
    return paths, train_cfg
