"""The prepare stage: :func:`check` (paths and options, before any tokenizer loads) and :func:`run`
(``headstart prepare``): tokenize a corpus with the teacher's tokenizer into packed token shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart import preflight
from headstart.config.prepare import PrepareConfig, PreparePaths
from headstart.errors import DataError
from headstart.progress import Progress


def check(paths: PreparePaths, cfg: PrepareConfig) -> None:
    """The output path and the inputs (local ones must exist), before the tokenizer loads."""
    preflight.out_path(paths.out)
    for item in paths.all_inputs():
        if item.startswith(("hf:", "builtin:")) or any(c in item for c in "*?["):
            continue
        if not Path(item).expanduser().exists():
            raise DataError(f"input {item} does not exist; give files, directories or globs, hf:NAME or "
                            "builtin:shakespeare")


def run(paths: PreparePaths, cfg: PrepareConfig, tokenizer: Any = None, progress: Progress | None = None) -> Path:
    """Prepare (or reuse) ``paths.out``; ``tokenizer`` may pass the teacher's, already loaded."""
    from headstart.data.prepare import prepare_corpus

    check(paths, cfg)
    if tokenizer is None:
        from headstart.teacher import load_tokenizer

        tokenizer = load_tokenizer(paths.tokenizer)
        if tokenizer is None:
            raise DataError(f"{paths.tokenizer} ships no tokenizer; pass a teacher directory, .gguf or hub id with one")
    search, val = cfg.held_out()
    result = prepare_corpus(paths.all_inputs(), tokenizer, paths.out, tokenizer_source=str(paths.tokenizer),
                            text_field=cfg.text_field, search_frac=search, val_frac=val, seed=cfg.seed,
                            workers=cfg.workers, shard_tokens=cfg.shard_tokens, overwrite=cfg.overwrite,
                            progress=progress)
    return result.path
