"""``headstart prepare``: tokenize a corpus with the teacher's tokenizer into packed token shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.commands.progress import Bars
from headstart.configs import PrepareConfig
from headstart.errors import DataError


def run(cfg: PrepareConfig, tokenizer: Any = None) -> Path:
    """Prepare (or reuse) ``cfg.out``; ``tokenizer`` may pass the teacher's, already loaded."""
    from headstart import preflight
    from headstart.data.prepare import prepare_corpus
    from headstart.data.splits import parse_split_fractions

    preflight.out_path(cfg.out)
    inputs = cfg.all_inputs()
    search, val = cfg.search_frac, cfg.val_frac
    if cfg.split_fractions:
        search, val = parse_split_fractions(cfg.split_fractions)
    if tokenizer is None:
        from headstart.teacher import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
        if tokenizer is None:
            raise DataError(f"{cfg.tokenizer} ships no tokenizer; pass a teacher directory, .gguf or hub id with one")
    with Bars(cfg.progress) as progress:
        result = prepare_corpus(inputs, tokenizer, cfg.out, tokenizer_source=str(cfg.tokenizer),
                                text_field=cfg.text_field, search_frac=search, val_frac=val, seed=cfg.seed,
                                workers=cfg.workers, shard_tokens=cfg.shard_tokens, overwrite=cfg.overwrite,
                                progress=progress)
    return result.path


def summary(path: Path, cfg: PrepareConfig) -> str:
    """What the directory holds, one line per split."""
    from headstart.data import read_manifest

    m = read_manifest(path)
    lines = [f"{path}: tokenizer {m['tokenizer']['fingerprint']}, {m['dtype']}"]
    for split, rec in m["splits"].items():
        lines.append(f"  {split:6s} {rec['tokens']:>12,} tokens  {rec['documents']:>8,} documents  "
                     f"{len(rec['shards'])} shards")
    if m.get("replaced"):
        lines.append(f"  {m['replaced']} undecodable byte sequences were replaced with U+FFFD")
    return "\n".join(lines)
