"""``headstart eval`` and ``headstart inspect``: what to measure of a checkpoint or a teacher."""

from __future__ import annotations

from dataclasses import dataclass

from headstart.config.common import DTYPE_HELP, DTYPES, TEACHER_HELP, check_local
from headstart.config.fields import SEED, FieldError, Section, option


@dataclass
class EvalPaths(Section):
    """What ``headstart eval`` reads and writes."""

    checkpoint: str = option(help="exported checkpoint directory", positional=True)
    data: str | None = option(None, "prepared data directory to measure perplexity on (its tokenizer must match)")
    text: str | None = option(None, "instead of --data: a UTF-8 text file to measure perplexity on")
    json_out: str | None = option(None, "also write the results to this JSON file", flag="--json")

    def check(self) -> None:
        check_local("checkpoint", self.checkpoint, "dir")
        check_local("data", self.data, "dir")
        check_local("text", self.text, "file")
        if self.data and self.text:
            raise FieldError("data", "and text exclude each other; give either --data or --text")


@dataclass
class EvalConfig(Section):
    """``headstart eval``: perplexity, samples, size and lm-eval tasks of an exported checkpoint."""

    split: str = option("val", "split of --data", choices=("train", "search", "val"))
    windows: int = option(64, "evaluation windows", ge=1)
    seq_len: int = option(256, "tokens per window", ge=2)
    batch_size: int = option(8, "windows per forward pass", ge=1)
    prompts: str = option("To be, or not to be|My lord, the king|What light through yonder",
                          "'|'-separated prompts to sample from", empty=True)
    max_new_tokens: int = option(40, "tokens to sample per prompt (0: no samples)", ge=0, le=1 << 16)
    seed: int = option(0, "seed of the window choice and sampling", **SEED)
    tasks: str | None = option(None, "comma-separated lm-evaluation-harness tasks or task YAML files (needs "
                               "headstart[lm-eval])")
    limit: int | None = option(None, "lm-eval: examples per task", ge=1)
    dtype: str = option("float32", DTYPE_HELP, choices=DTYPES)

    def task_list(self) -> list[str]:
        """The ``tasks``, split."""
        return [t.strip() for t in (self.tasks or "").split(",") if t.strip()]


@dataclass
class InspectPaths(Section):
    """What ``headstart inspect`` reads."""

    teacher: str = option(help=TEACHER_HELP, positional=True)

    def check(self) -> None:
        check_local("teacher", self.teacher)


@dataclass
class InspectConfig(Section):
    """``headstart inspect``: what a teacher is and which sub-networks it admits."""

    seq_len: int = option(2048, "context length for the FLOPs estimate", ge=1)
    json: bool = option(False, "print JSON instead of a table")
