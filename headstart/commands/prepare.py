"""``headstart prepare``: tokenize a corpus with the teacher's tokenizer into packed token shards."""

from __future__ import annotations

import argparse

from headstart.errors import ConfigError, DataError

HELP = "tokenize a corpus with the teacher's tokenizer into train/search/val token shards"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart prepare``."""
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files, directories or globs of .txt/.md/.jsonl (optionally .gz/.zst) and .parquet; "
        "hf:NAME[:CONFIG][@SPLIT] for a Hugging Face dataset",
    )
    p.add_argument("--tokenizer", help="the teacher: model directory, .gguf file, hub id, or builtin:smollm2-135m")
    p.add_argument("--out", help="output directory (created; reused if prepared from the same inputs)")
    p.add_argument("--builtin", choices=["shakespeare"], help="use an embedded corpus instead of (or besides) INPUTs")
    p.add_argument("--text-field", default="text", help="text field of JSONL lines, Parquet columns, dataset rows")
    split = p.add_argument_group("split (by document; a value >= 1 is a number of documents)")
    split.add_argument("--split-fractions", metavar="TRAIN,SEARCH,VAL", help="e.g. 0.96,0.02,0.02")
    split.add_argument("--search-frac", type=float, help="held out for the search (default 0.02; Shakespeare 2 plays)")
    split.add_argument("--val-frac", type=float, help="held out for validation (default 0.02; Shakespeare 3 plays)")
    split.add_argument("--seed", type=int, default=0, help="seed of the document split")
    p.add_argument("--workers", type=int, default=0, help="tokenizer processes (default: every core)")
    p.add_argument("--shard-tokens", type=int, default=1 << 26, help="tokens per shard file at most")
    p.add_argument("--overwrite", action="store_true", help="replace a directory prepared otherwise")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Load the tokenizer, prepare (or reuse) the directory, print what it holds."""
    from headstart.data.prepare import prepare_corpus
    from headstart.data.splits import parse_split_fractions
    from headstart.teacher import load_tokenizer

    if not args.tokenizer or not args.out:
        raise ConfigError("give --tokenizer (the teacher) and --out (the output directory)")
    inputs = list(args.inputs or []) + ([f"builtin:{args.builtin}"] if args.builtin else [])
    if not inputs:
        raise ConfigError("give input files, directories or globs, hf:NAME, or --builtin shakespeare")
    search, val = args.search_frac, args.val_frac
    if args.split_fractions:
        if search is not None or val is not None:
            raise ConfigError("give either --split-fractions or --search-frac/--val-frac, not both")
        search, val = parse_split_fractions(args.split_fractions)
    tokenizer = load_tokenizer(args.tokenizer)
    if tokenizer is None:
        raise DataError(f"{args.tokenizer} ships no tokenizer; pass a teacher directory, .gguf or hub id that has one")
    result = prepare_corpus(
        inputs,
        tokenizer,
        args.out,
        tokenizer_source=str(args.tokenizer),
        text_field=args.text_field,
        search_frac=search,
        val_frac=val,
        seed=args.seed,
        workers=args.workers or None,
        shard_tokens=args.shard_tokens,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    m = result.manifest
    verb = "reused (already prepared from the same inputs, tokenizer and options)" if result.reused else "prepared"
    print(f"{result.path}: {verb}; tokenizer {m['tokenizer']['fingerprint']}, {m['dtype']}")
    for split, rec in m["splits"].items():
        print(
            f"  {split:6s} {rec['tokens']:>12,} tokens  {rec['documents']:>8,} documents  {len(rec['shards'])} shards"
        )
    if m.get("replaced"):
        print(f"  {m['replaced']} undecodable byte sequences were replaced with U+FFFD")
    return 0
