"""What a search produced: per run and bin, the candidates and the best (plain data for reports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.config.search import SearchConfig
from headstart.searching.bins import BinTable


@dataclass
class RunOutcome:
    """One run's result: per bin, the candidates and the best; plus its speed."""

    name: str
    strategy: str
    order: str
    bins: list[Any]  # list[BinRun]
    computed: int
    seconds: float
    flops: int = 0  # forward FLOPs of the untrained screen

    @property
    def evaluations_per_minute(self) -> float:
        """Candidates actually evaluated (not replayed from the journal) per minute of this run."""
        return 60.0 * self.computed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SearchOutcome:
    """Everything a job produced."""

    job: SearchConfig
    tables: list[BinTable]
    runs: list[RunOutcome]
    teacher_source: str
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    rungs: dict[str, list[Any]] = field(default_factory=dict)  # bin label -> list[RungResult], rung by rung
    importance_flops: int = 0

    def flops(self) -> dict[str, int]:
        """Every FLOP the search spent: importance pass, untrained screen (all runs), training-aware rungs."""
        screening = sum(r.flops for r in self.runs)
        rungs = sum(r.flops for results in self.rungs.values() for r in results)
        return {"importance": self.importance_flops, "screening": screening, "rungs": rungs,
                "total": self.importance_flops + screening + rungs}
