"""What a search produced: per run and bin, the candidates and the best (plain data for reports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.configs import SearchConfig
from headstart.search.bins import BinTable


@dataclass
class RunOutcome:
    """One run's result: per bin, the candidates and the best; plus its speed."""

    name: str
    strategy: str
    order: str
    bins: list[Any]  # list[BinRun]
    computed: int
    seconds: float

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
