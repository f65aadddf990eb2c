"""Benchmark: what the integrity checks cost at start-up (shard verification, checkpoint checks).

Three measurements, each against its reference in the same process, alternating, ``--repeats`` times:

* **data open**: ``TokenStream(train)`` of a large prepared corpus (``--corpus-mb`` of repeated
  Shakespeare text, tokenized with the builtin teacher's tokenizer by ``headstart.data.prepare``) with
  verification (sha256 and largest id of every shard, first open in the process) against
  ``verify=False``; warm page cache, and cold (the shards' pages dropped with ``posix_fadvise``), plus
  the raw rates of sha256, BLAKE2b, CRC-32 and the id maximum over the same bytes;
* **builtin data open**: the same on the builtin Shakespeare corpus, and ``prepare``'s reuse of it;
* **teacher load**: ``load_teacher('builtin:smollm2-135m')`` with the checks of
  :mod:`headstart.integrity` against the same call with them replaced by no-ops (alternating which
  goes first), and the checks alone.

Writes ``bench/results/integrity_cost.json`` (or ``--out``).

    python bench/integrity_cost.py [--corpus-mb 1600] [--repeats 3] [--work /tmp/hs_integrity]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _drop_pages(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _rates(paths: list[Path]) -> dict[str, float]:
    """GB/s of each checksum over the files (warm cache), read in 16 MiB blocks as the verifier does."""
    import numpy as np

    def run(update) -> float:
        size, start = 0, time.perf_counter()
        for path in paths:
            with open(path, "rb") as fh:
                while block := fh.read(1 << 24):
                    update(block)
                    size += len(block)
        return size / (time.perf_counter() - start) / 1e9

    crc = [0]
    return {"sha256": run(hashlib.sha256().update), "blake2b": run(hashlib.blake2b().update),
            "crc32": run(lambda b: crc.__setitem__(0, zlib.crc32(b, crc[0]))),
            "max_id": run(lambda b: np.frombuffer(b, dtype=np.uint16).max()), "read_only": run(lambda b: None)}


def big_corpus(work: Path, megabytes: int, tokenizer) -> Path:
    """A prepared corpus of about ``megabytes`` of repeated Shakespeare text (reused when present)."""
    from headstart.data import builtin_corpus, prepare

    text_dir = work / "text"
    if not text_dir.is_dir():
        plays = builtin_corpus()
        size = sum(len(t.encode()) for _, t in plays)
        text_dir.mkdir(parents=True)
        for copy in range(max(1, megabytes * (1 << 20) // size)):
            with open(text_dir / f"copy{copy:04d}.txt", "w", encoding="utf-8") as fh:
                fh.write("\n\n".join(f"[{copy}] {t}" for _, t in plays))
    return prepare([text_dir], tokenizer, work / "data", tokenizer_source="builtin:smollm2-135m",
                   search_frac=1, val_frac=1, max_doc_bytes=1 << 20)


def data_open(data: Path, repeats: int) -> dict:
    from headstart.data import TokenStream, read_manifest
    from headstart.data.verify import forget_verified

    manifest = read_manifest(data)
    shards = [data / s["file"] for s in manifest["splits"]["train"]["shards"]]
    out: dict[str, list[float]] = {"unverified": [], "verified_warm": [], "verified_cold": [], "again": []}
    for _ in range(repeats):
        forget_verified()
        out["unverified"].append(_timed(lambda: TokenStream(data, "train", verify=False)))
        out["verified_warm"].append(_timed(lambda: TokenStream(data, "train")))
        out["again"].append(_timed(lambda: TokenStream(data, "train")))  # verified already in this process
        forget_verified()
        _drop_pages(shards)
        out["verified_cold"].append(_timed(lambda: TokenStream(data, "train")))
    result = {k: statistics.median(v) for k, v in out.items()}
    result.update(bytes=sum(p.stat().st_size for p in shards), shards=len(shards),
                  tokens=manifest["splits"]["train"]["tokens"], rates_gb_s=_rates(shards), all=out)
    result["warm_overhead_s"] = result["verified_warm"] - result["unverified"]
    return result


def teacher_load(repeats: int) -> dict:
    from headstart import teacher as teacher_mod

    real = {n: getattr(teacher_mod, n) for n in ("check_config", "check_layer_count", "check_loading_info")}
    times: dict[str, list[float]] = {"checked": [], "unchecked": []}
    teacher_mod.load_teacher("builtin:smollm2-135m")  # warm the page cache and imports once
    for rep in range(repeats):
        for variant in ("checked", "unchecked") if rep % 2 == 0 else ("unchecked", "checked"):  # alternate order
            if variant == "unchecked":
                for name in real:
                    setattr(teacher_mod, name, lambda *a, **k: None)
            try:
                times[variant].append(_timed(lambda: teacher_mod.load_teacher("builtin:smollm2-135m")))
            finally:
                for name, fn in real.items():
                    setattr(teacher_mod, name, fn)
    med = {k: statistics.median(v) for k, v in times.items()}
    from headstart.assets import smollm2_dir

    directory = smollm2_dir()
    config = teacher_mod.model_config(directory)
    headers = statistics.median(_timed(lambda: real["check_layer_count"](config, directory)) for _ in range(repeats))
    fields = statistics.median(_timed(lambda: real["check_config"](config, "x")) for _ in range(repeats))
    return {**med, "ratio": med["checked"] / med["unchecked"], "layer_count_check_s": headers,
            "config_check_s": fields, "all": times}


def builtin_data(work: Path, tokenizer, repeats: int) -> dict:
    from headstart.data import prepare_corpus
    from headstart.data.verify import forget_verified

    kw = dict(tokenizer_source="builtin:smollm2-135m")
    data = prepare_corpus(["builtin:shakespeare"], tokenizer, work / "shakespeare", **kw).path
    result = data_open(data, repeats)
    reuse: dict[str, list[float]] = {"reuse_first_in_process": [], "reuse_verified_before": []}
    for _ in range(repeats):
        forget_verified()
        reuse["reuse_first_in_process"].append(_timed(lambda: prepare_corpus(["builtin:shakespeare"], tokenizer,
                                                                             data, **kw)))
        reuse["reuse_verified_before"].append(_timed(lambda: prepare_corpus(["builtin:shakespeare"], tokenizer,
                                                                            data, **kw)))
    result.update({k: statistics.median(v) for k, v in reuse.items()})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-mb", type=int, default=1600, help="MB of text in the large corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default="/tmp/hs_integrity")
    parser.add_argument("--only-teacher", action="store_true", help="measure the teacher load only")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "integrity_cost.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from headstart.io import write_json
    from headstart.teacher import load_tokenizer

    work = Path(args.work)
    if args.only_teacher:
        result = {"teacher": teacher_load(args.repeats)}
        write_json(args.out, result)
        print(json.dumps(result, indent=1))
        return 0
    tokenizer = load_tokenizer("builtin:smollm2-135m", require=True)
    start = time.perf_counter()
    data = big_corpus(work, args.corpus_mb, tokenizer)
    result = {"prepare_large_s": time.perf_counter() - start, "large": data_open(data, args.repeats),
              "builtin": builtin_data(work, tokenizer, args.repeats), "teacher": teacher_load(args.repeats)}
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items()}, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
