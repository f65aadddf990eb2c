"""Training-aware selection: successive halving over short distillation runs, after the untrained screen.

The untrained loss ranks candidates cheaply but it is not what a user wants: the student that is
best *after* training. So the best ``candidates`` of each bin (by untrained loss, distinct
sub-networks) train for ``tokens`` tokens with the real train loop (same loss, optimizer and seed
rules as ``headstart train``), are scored on the search split, and the best ``1/eta`` of them
train again, from the cut, for ``tokens * eta`` tokens (rung 2), and so on for ``rungs`` rungs. The
winner is the best by search-split loss after its last rung; its trained weights may seed the final
training. Rungs train on the schedule of a student cut from the teacher (``--rung-lr`` 5e-4,
``--rung-warmup`` 1 %, as :data:`headstart.configs.INHERITED`).

Each rung trains from the cut rather than continuing the previous rung's student: a continuation
restarts Adam with empty moments at the full learning rate on an already trained student, and on
the builtin teacher that made one of two rung-2 runs diverge (search loss 4.79 after rung 1, 7.09
after rung 2) while retraining the same 8k tokens again; a full short schedule per rung costs
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
from headstart.configs import INHERITED
from headstart.errors import ConfigError
from headstart.io import write_json
from headstart.lm_loss import sum_cross_entropy
from headstart.search.evolve import BinRun, Candidate

log = logging.getLogger(__name__)

RUNG_FILE = "rung.json"


@dataclass(frozen=True)
class RungSettings:
    """Successive halving: ``rungs`` rungs, ``candidates`` at rung 1, rung ``r`` trains ``tokens * eta**(r-1)``
    tokens from the cut."""

    rungs: int = 2
    candidates: int = 4
    tokens: int = 25_000
    eta: int = 2
    seed: int = 0
    dtype: str = "auto"
    batch_size: int = 4
    lr: float = INHERITED["lr"]
    warmup: float = INHERITED["warmup"]

    def __post_init__(self) -> None:
        if self.rungs < 0:
            raise ConfigError(f"--rungs {self.rungs} must not be negative (0: rank by the untrained loss only)")
        if self.rungs and self.candidates < 1:
            raise ConfigError(f"--rung-candidates {self.candidates} must be at least 1")
        if self.rungs and self.tokens < 1:
            raise ConfigError(f"--rung-tokens {self.tokens} must be positive")
        if self.eta < 2:
            raise ConfigError(f"--rung-eta {self.eta} must be at least 2 (the share kept per rung is 1/eta)")

    def budget(self, rung: int) -> int:
        """Training tokens of a candidate's run in ``rung`` (1-based), from the cut."""
        return self.tokens * self.eta ** (rung - 1)


@dataclass
class RungResult:
    """One candidate after one rung."""

    candidate: Candidate
    rung: int
    tokens: int  # trained from the cut
    loss: float  # search-split loss after training
    student: Path  # the exported trained student
    flops: int  # training FLOPs of this rung (student 3x forward + teacher forward) plus its scoring


def run_rungs(states: list[BinRun], settings: RungSettings, teacher: Any, data: str, windows: torch.Tensor,
              out: Path, seq_len: int, resume: bool) -> dict[str, list[RungResult]]:
    """Successive halving over the best candidates of each bin; per bin label, every result, rung by
    rung (the last rung's best is the winner). A rung trains the candidates of every bin at once, spread
    over the ranks."""
    if not settings.rungs:
        return {}
    alive: dict[str, list[Candidate]] = {s.table.bin.label: _distinct(s.candidates)[: settings.candidates]
                                         for s in states}
    results: dict[str, list[RungResult]] = {label: [] for label in alive}
    for rung in range(1, settings.rungs + 1):
        work = [(label, c) for label, cands in alive.items() for c in cands]

        def train_one(item: tuple[str, Candidate], rung: int = rung) -> dict[str, Any]:
            label, cand = item
            return _train_one(cand, rung, settings, teacher, data, windows, out / label, seq_len, resume)

        records = parallel.spread(train_one, work, costs=[c.flops for _, c in work])
        for label in alive:
            scored = [RungResult(c, rung, int(r["tokens"]), float(r["loss"]), Path(r["student"]), int(r["flops"]))
                      for (lab, c), r in zip(work, records) if lab == label]
            results[label] += scored
            scored.sort(key=lambda r: (r.loss, r.candidate.spec_hash))
            log.info("%s rung %d: %s", label, rung, ", ".join(f"{r.loss:.3f}" for r in scored))
            alive[label] = [r.candidate for r in scored[: max(1, len(scored) // settings.eta)]]
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


def _train_one(cand: Candidate, rung: int, settings: RungSettings, teacher: Any, data: str, windows: torch.Tensor,
               root: Path, seq_len: int, resume: bool) -> dict[str, Any]:
    """Train one candidate through one rung in this process alone (under :func:`headstart.parallel.solo`)
    and score it on every window; its ``rung.json`` record (read back when it is already there)."""
    from headstart.commands.train import run as train
    from headstart.teacher import load_model
    from headstart.train.build import SUMMARY
    from headstart.train.config import TrainConfig

    run_dir = root / cand.spec_hash / f"rung{rung}"
    done = run_dir / RUNG_FILE
    trained_with = {"tokens": settings.budget(rung), "seq_len": seq_len, "batch_size": settings.batch_size,
                    "lr": settings.lr, "warmup": settings.warmup, "seed": settings.seed, "dtype": settings.dtype}
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
    tokens = settings.budget(rung)
    cfg = TrainConfig(student=str(spec_file), teacher=teacher.source, data=data, out=str(run_dir), tokens=tokens,
                      seq_len=seq_len, batch_size=settings.batch_size, seed=settings.seed, lr=settings.lr,
                      warmup=settings.warmup, eval_windows=0,
                      eval_every=0, save_every=max(1, tokens // (settings.batch_size * seq_len) // 4),
                      keep=1, progress=False, dtype=settings.dtype,
                      resume=resume and (run_dir / "checkpoints").is_dir())
    train(cfg, teacher=teacher)
    student_dir = run_dir / "student"
    summary = json.loads((student_dir / SUMMARY).read_text())
    s, n = sum_cross_entropy(load_model(student_dir).to(next(teacher.model.parameters()).device), windows)
    record = {"spec_hash": cand.spec_hash, "rung": rung, "tokens": settings.budget(rung),
              "trained_with": trained_with, "loss": s / n, "untrained_loss": cand.loss,
              "flops": summary["student_train_flops"] + summary["teacher_flops"] + cand.flops * n,
              "student": str(student_dir)}
    write_json(done, record)
    return record
