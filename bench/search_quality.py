"""Search quality on the real teacher: evolution + importance vs random + importance vs random + first-k.

SmolLM2-135M (builtin, offline) on Shakespeare (builtin corpus, prepared once into the headstart
cache), one budget near half the teacher's parameters, the same number of evaluations per run:

  (a) evolution/importance   headstart's default
  (b) random/importance      random sampling, importance-ordered slicing
  (c) random/first-k         whittle's setting: random shapes, first-k slicing, prefix layers

All three run inside one ``headstart search --baselines`` job (same bin, windows and fitness), so the
reference is measured in the same run. Writes ``bench/results/search_quality.json`` and prints it.

    python bench/search_quality.py [--evaluations 30] [--windows 8] [--seq-len 256] [--seeds 0,1,2]

One seed (the default) takes about 5-9 minutes on 2 free cores; ``--seeds`` repeats the three runs
per seed (the teacher, data and importance are loaded once) and reports every seed and the mean.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}
RESULTS = Path(__file__).resolve().parent / "results"


def _reexec_with_malloc_settings() -> None:
    """glibc's allocator settings must be in the environment before the process starts (brief §5)."""
    if any(os.environ.get(k) != v for k, v in MALLOC.items()):
        os.environ.update(MALLOC)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.execv(sys.executable, [sys.executable, *sys.argv])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--evaluations", type=int, default=30, help="evaluations per run (one bin)")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--windows", type=int, default=8, help="search windows per fitness evaluation")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--fraction", type=float, default=0.5, help="budget as a fraction of the teacher's parameters")
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--seeds", default="0", help="comma-separated search seeds")
    args = p.parse_args()
    _reexec_with_malloc_settings()

    import logging

    from headstart.assets import cache_dir
    from headstart.configs import SearchConfig
    from headstart.data import prepare
    from headstart.search.fitness import Fitness
    from headstart.search.pipeline import load_windows, run_job
    from headstart.search.report import table
    from headstart.selection import full
    from headstart.teacher import load_teacher

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    teacher = load_teacher("builtin:smollm2-135m")
    data = prepare(["builtin:shakespeare"], teacher.tokenizer, cache_dir() / "bench" / "shakespeare-smollm2",
                   tokenizer_source="builtin:smollm2-135m", workers=1)
    teacher_params = teacher.adapter.counts().params
    budget = int(teacher_params * args.fraction)
    per_seed, teacher_loss, bin = [], None, None
    for seed in [int(x) for x in args.seeds.split(",")]:
        out = RESULTS / "search_quality" / f"seed{seed}"
        shutil.rmtree(out, ignore_errors=True)
        job = SearchConfig(teacher="builtin:smollm2-135m", data=str(data), out=str(out), params=str(budget),
                        tolerance=args.tolerance, strategy="evolution", order="importance",
                        evaluations=args.evaluations, population=args.population, windows=args.windows,
                        seq_len=args.seq_len, batch_size=args.batch_size, seed=seed, baselines=True)
        if teacher_loss is None:
            windows, _ = load_windows(job, teacher)
            teacher_loss = Fitness(teacher, windows, batch_size=args.batch_size)(full(teacher.dims))
        outcome = run_job(job, teacher=teacher, progress=_progress)
        print(table(outcome), flush=True)
        per_seed.append({"seed": seed, "runs": _runs(outcome)})
        bin = outcome.tables[0].bin.to_dict()
    result = _result(per_seed, args, teacher_params, budget, bin, teacher_loss, time.perf_counter() - start)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "search_quality.json"
    tmp = path.with_name(".search_quality.json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    print(json.dumps(result, indent=1))


def _progress(run, states, cand) -> None:
    best = states[0].best
    print(f"{run} #{len(states[0].candidates)}: loss {cand.loss:.3f} ({cand.params / 1e6:.1f}M, "
          f"{cand.spec.describe()}, depth {cand.genome.depth}); best {best.loss:.3f}", flush=True)


def _runs(outcome) -> dict:
    from headstart.search.report import summary

    runs = {}
    for run in summary(outcome)["runs"]:
        [b] = run["bins"]
        runs[run["run"]] = {
            "best_loss": b["best_loss"], "best_params": b["best_params"], "best_sizes": b["best_sizes"],
            "best_layers": b["best_layers"], "best_depth": b["best_depth"], "evaluations": b["evaluations"],
            "computed": run["computed"], "evaluations_per_minute": run["evaluations_per_minute"],
            "seconds": run["seconds"],
        }
    return runs


def _result(per_seed: list, args, full: int, budget: int, bin: dict, teacher_loss: float, seconds: float) -> dict:
    names = list(per_seed[0]["runs"])

    def mean(key: str, name: str) -> float:
        return round(sum(s["runs"][name][key] for s in per_seed) / len(per_seed), 4)

    summary = {name: {"best_loss_mean": mean("best_loss", name),
                      "best_loss_per_seed": [round(s["runs"][name]["best_loss"], 4) for s in per_seed],
                      "evaluations_per_minute_mean": mean("evaluations_per_minute", name)} for name in names}
    evo = summary["evolution/importance"]["best_loss_mean"]
    return {
        "teacher": "builtin:smollm2-135m", "teacher_params": full, "teacher_loss": round(teacher_loss, 4),
        "budget": budget, "bin": bin, "evaluations_per_run": args.evaluations, "population": args.population,
        "windows": args.windows, "seq_len": args.seq_len, "seeds": [s["seed"] for s in per_seed],
        "summary": summary,
        "evolution_minus_whittle_nats": round(evo - summary["random/first-k"]["best_loss_mean"], 4),
        "evolution_minus_random_importance_nats": round(evo - summary["random/importance"]["best_loss_mean"], 4),
        "per_seed": per_seed,
        "total_seconds": round(seconds, 1),
        "torch_threads": __import__("torch").get_num_threads(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    main()
