"""``headstart export``: a training run's checkpoint as a loadable Hugging Face directory."""

from __future__ import annotations

from dataclasses import dataclass

from headstart.config.common import TEACHER_HELP, check_local
from headstart.config.fields import Section, option


@dataclass
class ExportPaths(Section):
    """Which run's checkpoint ``headstart export`` reads, and where the checkpoint goes."""

    run: str = option(help="the run directory of headstart train (its --out)", positional=True)
    out: str = option(help="the Hugging Face directory to write (must not exist)")
    teacher: str | None = option(None, TEACHER_HELP + " (default: the run's own teacher)")

    def check(self) -> None:
        check_local("run", self.run, "dir")
        check_local("teacher", self.teacher)


@dataclass
class ExportConfig(Section):
    """``headstart export``: which checkpoint of the run."""

    step: int | None = option(None, "the checkpoint's optimizer step (default: the newest)", ge=0)
