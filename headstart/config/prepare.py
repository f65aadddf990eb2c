"""``headstart prepare``: what corpus, which tokenizer, where — and how it is split and sharded."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from headstart.config.common import BUILTIN_CORPORA, TEACHER_HELP, check_local
from headstart.config.fields import SEED, FieldError, Section, option


@dataclass
class PreparePaths(Section):
    """Where ``headstart prepare`` reads and writes."""

    tokenizer: str = option(help="the teacher whose tokenizer to use: " + TEACHER_HELP)
    out: str = option(help="output directory (reused if prepared from the same inputs)")
    inputs: list[str] = option([], "files, directories or globs of .txt/.md/.jsonl (optionally .gz/.zst) and "
                               ".parquet; hf:NAME[:CONFIG][@SPLIT]; builtin:shakespeare", positional=True)
    builtin: str | None = option(None, "an embedded corpus instead of (or besides) INPUTs", choices=BUILTIN_CORPORA)

    def check(self) -> None:
        check_local("tokenizer", self.tokenizer)

    def all_inputs(self) -> list[str]:
        """The inputs with ``--builtin`` appended; :class:`FieldError` when there are none."""
        inputs = list(self.inputs) + ([f"builtin:{self.builtin}"] if self.builtin else [])
        if not inputs:
            raise FieldError("inputs", "are missing; give files, directories or globs, hf:NAME, or --builtin "
                             "shakespeare")
        return inputs


@dataclass
class PrepareConfig(Section):
    """``headstart prepare``: tokenize a corpus with the teacher's tokenizer into packed token shards."""

    text_field: str = option("text", "text field of JSONL lines, Parquet columns and dataset rows")
    split_fractions: list[float] | None = option(None, "TRAIN,SEARCH,VAL fractions summing to 1, e.g. "
                                                 "0.96,0.02,0.02", ge=0, le=1, metavar="TRAIN,SEARCH,VAL")
    search_frac: float | None = option(None, "held out for the search: a fraction, or documents if >= 1 "
                                       "(default 0.02; Shakespeare: 2 plays)", ge=0)
    val_frac: float | None = option(None, "held out for validation (default 0.02; Shakespeare: 3 plays)", ge=0)
    seed: int = option(0, "seed of the document split", **SEED)
    workers: int | None = option(None, "tokenizer processes (default: every core; at most twice the cores)", ge=1)
    shard_tokens: int = option(1 << 26, "tokens per shard file at most", ge=1024)
    overwrite: bool = option(False, "replace a directory prepared from other inputs")

    def check(self) -> None:
        for name in ("search_frac", "val_frac"):
            value = getattr(self, name)
            if value is not None and value >= 1 and value != int(value):
                raise FieldError(name, f"must be a fraction in [0, 1) or a whole number of documents, got {value}")
        if self.split_fractions is not None:
            if self.search_frac is not None or self.val_frac is not None:
                raise FieldError("split_fractions", "and search_frac/val_frac exclude each other; give one")
            if len(self.split_fractions) != 3 or not math.isclose(sum(self.split_fractions), 1.0, abs_tol=1e-6):
                raise FieldError("split_fractions", f"must be three fractions TRAIN,SEARCH,VAL summing to 1, got "
                                 f"{self.split_fractions}")
        cores = os.cpu_count() or 1
        if self.workers is not None and self.workers > 2 * cores:
            raise FieldError("workers", f"{self.workers} is more than twice the {cores} cores here; use at most "
                             f"{2 * cores}")

    def held_out(self) -> tuple[float | None, float | None]:
        """``(search, val)`` held-out sizes (``None``: the default)."""
        if self.split_fractions is not None:
            return self.split_fractions[1], self.split_fractions[2]
        return self.search_frac, self.val_frac
