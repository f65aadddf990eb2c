"""Search quality on the real teacher: the search as shipped vs random sampling, judged after training.

SmolLM2-135M (builtin, offline) on Shakespeare (builtin corpus), the bin 45-55 % of the teacher's
parameters, per seed:

  default            the search as shipped: evolution in importance order, bf16 fitness with early
                     abandonment, training-aware rungs (successive halving)
  random-importance  random sampling in importance order, untrained ranking only, given the same search
                     FLOPs as ``default`` (what the rungs cost, it spends on more evaluations: its journal
                     is extended with ``--resume`` until its FLOPs reach the default's)
  random-first-k     whittle's setting: random shapes, first-k slicing, prefix layers, untrained ranking
                     (``--evaluations``, no top-up)

Each method's winner is scored untrained on fixed ``val`` windows the search never saw
(``heldout_loss``; ``screen_best_heldout_loss``: the screen's best by untrained loss, which the rungs
may pass over), then trained with the same fixed budget (KD from the teacher on the schedule
``headstart run`` gives a student cut from the teacher, the same options for every method) and scored
again on those windows (``trained_loss``). ``fitness_speedup`` times the shipped fitness (bf16 where
the CPU is fast at it, early abandonment) against the plain fp32 path on the same candidates in one
run (``precision_speedup``: bf16 alone), and ``rank_correlation`` is
Spearman's rho between the fp32 and bf16 losses.

``--data-orders 10,11,12`` retrains the default's and random sampling's winners of ``--data-order-seeds``
under those data-order seeds as well (``data_orders`` in the JSON): how far ``trained_loss`` moves
with the order of the training data alone, the yardstick for a per-seed difference between methods.

The measurement is resumable run by run: every (method, seed) result is a JSON file under
``bench/results/search_quality/``; a rerun skips what is finished, so seeds can be added later, and
a run cut short replays its search from its journal and redoes the rest.
Writes ``docs/search_quality.json``.

    python bench/search_quality.py [--seeds 0,1,2] [--evaluations 60] [--train-tokens 200000]
                                   [--data-orders 10,11,12 --data-order-seeds 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "search_quality"
METHODS = ("default", "random-importance", "random-first-k")


def _reexec_with_malloc_settings() -> None:
    """glibc's allocator settings must be in the environment before the process starts (brief §5)."""
    if any(os.environ.get(k) != v for k, v in MALLOC.items()):
        os.environ.update(MALLOC)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.execv(sys.executable, [sys.executable, *sys.argv])


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--evaluations", type=int, default=60, help="untrained evaluations per method and seed")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generation-size", type=int, default=1,
                   help="children per generation (1, steady state: how the published seed 0 ran; the search's "
                        "default is --population)")
    p.add_argument("--windows", type=int, default=16, help="search-split windows per evaluation")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--heldout-windows", type=int, default=16, help="val windows the winners are scored on")
    p.add_argument("--train-tokens", type=int, default=200_000, help="training budget of every winner")
    p.add_argument("--rung-tokens", type=int, default=8192, help="default's rung-1 tokens")
    p.add_argument("--speed-candidates", type=int, default=60, help="candidates timed fp32 vs shipped fitness")
    p.add_argument("--data-orders", default="", help="extra data-order seeds the winners are retrained with")
    p.add_argument("--data-order-seeds", default="", help="search seeds whose winners --data-orders retrains "
                   "(default: all of --seeds)")
    p.add_argument("--speed-only", action="store_true", help="time the fitness arms only (no searches, no training)")
    p.add_argument("--out", default=str(ROOT / "docs" / "search_quality.json"))
    p.add_argument("--results", default=str(RESULTS), help="per-run results (a rerun skips what is there)")
    p.add_argument("--model", default="builtin:smollm2-135m", help=argparse.SUPPRESS)
    p.add_argument("--corpus", default="builtin:shakespeare", help=argparse.SUPPRESS)
    p.add_argument("--fraction", type=float, default=0.5, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = _args()
    _reexec_with_malloc_settings()
    from headstart.io import write_json

    teacher, data, heldout, budget, results = setup(args)
    speed = _cached(results / "fitness_speed.json", lambda: _fitness_speed(args, teacher, data, budget))
    if args.speed_only:
        print(json.dumps(speed, indent=1))
        return
    per = {m: [] for m in METHODS}
    for seed in [int(s) for s in args.seeds.split(",")]:
        default = _cached(results / f"default-seed{seed}.json",
                          lambda seed=seed: _method(args, teacher, data, heldout, budget, "default", seed))
        per["default"].append(default)
        for method in METHODS[1:]:
            per[method].append(_cached(results / f"{method}-seed{seed}.json",
                                       lambda m=method, seed=seed, d=default: _method(
                                           args, teacher, data, heldout, budget, m, seed,
                                           match_flops=d if m == "random-importance" else None)))
    result = _result(args, per, speed, heldout)
    if args.data_orders:
        result["data_orders"] = _data_orders(args, teacher, data, heldout, per)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "methods"}, indent=1))


def setup(args) -> tuple:
    """The teacher, the prepared corpus, the held-out ``val`` windows, the parameter budget (the bin's
    centre) and the results directory: what this benchmark and ``search_spaces.py`` share."""
    import logging

    from headstart.assets import cache_dir
    from headstart.data import fixed_windows, prepare
    from headstart.teacher import load_teacher

    logging.basicConfig(level=logging.WARNING)
    teacher = load_teacher(args.model)
    data = prepare([args.corpus], teacher.tokenizer, cache_dir() / "bench" / "shakespeare-smollm2",
                   tokenizer_source=args.model, workers=1)
    heldout = fixed_windows(data, "val", args.seq_len, args.heldout_windows, seed=0)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    return teacher, data, heldout, int(teacher.adapter.counts().params * args.fraction), results


def _cached(path: Path, compute) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    from headstart.io import write_json

    value = compute()
    write_json(path, value)
    return value


def _job(args, data, budget: int, out: Path, resume: bool = False, **over):
    """The paths and options of one search; ``over`` sets options over the shared ones (a section's as a
    mapping: ``evolution={"strategy": "random"}``)."""
    from headstart.config import SearchConfig, SearchPaths, build
    from headstart.config.fields import merge

    base = {"params": str(budget), "tolerance": 0.1, "seq_len": args.seq_len, "batch_size": 4,
            "evolution": {"evaluations": args.evaluations, "population": args.population,
                          "generation_size": args.generation_size},
            "fitness": {"windows": args.windows}, "rungs": {"tokens": args.rung_tokens}}
    paths = SearchPaths(teacher=args.model, data=str(data), out=str(out), resume=resume)
    return paths, build(SearchConfig, merge(base, over))


def _method(args, teacher, data, heldout, budget: int, method: str, seed: int, match_flops: dict | None = None):
    import shutil
    from dataclasses import replace

    from headstart.config import read_yaml
    from headstart.extraction import build_student
    from headstart.lm_loss import sum_cross_entropy
    from headstart.searching import stage
    from headstart.searching.report import summary

    out = Path(args.results) / f"{method}-seed{seed}"
    resume = (out / "journal.jsonl").is_file()  # a cut-short run: replay its search, redo everything after it
    for stale in (out.iterdir() if out.is_dir() else ()):
        if stale.name != "journal.jsonl":
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if method == "default":
        job = _job(args, data, budget, out, seed=seed, resume=resume)
    elif method == "random-importance":  # the rungs' cost buys more evaluations (the loop below tops them up)
        per_eval = match_flops["screening_flops"] / max(1, match_flops["computed"])
        extra = math.ceil(match_flops["rung_flops"] / per_eval) if per_eval else 0
        job = _job(args, data, budget, out, seed=seed, resume=resume, rungs={"count": 0},
                   evolution={"strategy": "random", "evaluations": args.evaluations + extra})
    else:
        space = out.parent / "prefix-layers.yaml"
        space.write_text("depth_modes: [top]\n")
        job = _job(args, data, budget, out, seed=seed, resume=resume, rungs={"count": 0},
                   evolution={"strategy": "random"}, space={"order": "first-k", "file": str(space)})
    start = time.perf_counter()
    outcome = stage.run(*job, teacher=teacher)
    s = summary(outcome)
    while match_flops is not None and s["flops"]["total"] < match_flops["search_flops"]:
        # evaluations cost what abandonment leaves of them, so extend the journal until the FLOPs match
        per_eval = s["flops"]["screening"] / s["runs"][0]["bins"][0]["evaluations"]
        more = math.ceil((match_flops["search_flops"] - s["flops"]["total"]) / per_eval)
        paths, cfg = job
        job = (replace(paths, resume=True),
               replace(cfg, evolution=replace(cfg.evolution, evaluations=cfg.evolution.evaluations + more)))
        outcome = stage.run(*job, teacher=teacher)
        s = summary(outcome)
    seconds = time.perf_counter() - start
    run = s["runs"][0]
    computed, scoring = _scored(out / "journal.jsonl", run["run"])
    best = out / f"best-{outcome.tables[0].bin.label}.yaml"
    heldout_loss, trained_loss = _score(args, teacher, data, heldout, best, out / "trained", seed)
    screened = outcome.runs[0].bins[0].best  # the screen's best by untrained loss (the rungs may pick another)
    s_loss, s_n = sum_cross_entropy(build_student(teacher, screened.spec), heldout)
    return {"method": method, "seed": seed, "bin": outcome.tables[0].bin.to_dict(),
            "evaluations": run["bins"][0]["evaluations"], "computed": computed,
            "abandoned": run["abandoned"], "evals_per_min": round(60 * computed / scoring, 2),
            "screening_flops": s["flops"]["screening"], "rung_flops": s["flops"]["rungs"],
            "search_flops": s["flops"]["total"], "search_seconds": round(seconds, 1),
            "winner": str(best.name), "winner_params": read_yaml(best, "spec")["params"],
            "screen_best_params": screened.params, "heldout_loss": heldout_loss, "trained_loss": trained_loss,
            "screen_best_heldout_loss": round(s_loss / s_n, 4)}


def _data_orders(args, teacher, data, heldout, per: dict) -> dict:
    """Each chosen seed's default and random-importance winners retrained under every ``--data-orders``
    seed (after the search seed's own order, as ``trained_loss`` had it), with the paired difference."""
    results, orders = Path(args.results), [int(o) for o in args.data_orders.split(",")]
    out = {}
    for seed in [int(s) for s in (args.data_order_seeds or args.seeds).split(",")]:
        losses = {}
        for method in METHODS[:2]:
            [run] = [r for r in per[method] if r["seed"] == seed]
            spec = results / f"{method}-seed{seed}" / run["winner"]
            losses[method] = [run["trained_loss"]]
            for order in orders:
                run_dir = results / f"order-{method}-seed{seed}-{order}"
                retrained = _cached(run_dir.with_suffix(".json"), lambda spec=spec, run_dir=run_dir, order=order: {
                    "trained_loss": _score(args, teacher, data, heldout, spec, run_dir, order)[1]})
                losses[method].append(retrained["trained_loss"])
        diff = [round(d - r, 4) for d, r in zip(losses["default"], losses["random-importance"])]
        out[str(seed)] = {"orders": [seed, *orders], **losses, "default_minus_random": diff,
                          "mean_diff": round(statistics.fmean(diff), 4), "sd_diff": round(statistics.stdev(diff), 4)}
    return out


def _scored(journal: Path, run: str) -> tuple[int, float]:
    """Candidates the run computed (not reused) and the seconds spent scoring them, from its journal
    (so a resumed or topped-up search counts every call)."""
    records = [json.loads(line) for line in journal.read_text().splitlines()[1:] if line.strip()]
    mine = [r for r in records if r.get("run") == run and not r.get("reused")]
    return len(mine), sum(float(r["seconds"]) for r in mine)


def _score(args, teacher, data, heldout, spec_file: Path, run_dir: Path, seed: int) -> tuple[float, float]:
    """The winner's loss on the held-out windows untrained, and after ``--train-tokens`` of KD training on the
    schedule ``headstart run`` gives a student cut from the teacher (``INHERITED``, half of train's batch 8)."""
    from headstart.config import TrainConfig, TrainPaths, build
    from headstart.config.fields import merge
    from headstart.config.train import INHERITED
    from headstart.extraction import build_student
    from headstart.lm_loss import sum_cross_entropy
    from headstart.spec import SubnetSpec
    from headstart.teacher import load_model
    from headstart.training import stage

    s, n = sum_cross_entropy(build_student(teacher, SubnetSpec.load(spec_file)), heldout)
    paths = TrainPaths(student=str(spec_file), teacher=args.model, data=str(data), out=str(run_dir))
    cfg = build(TrainConfig, merge({"tokens": args.train_tokens, "seq_len": args.seq_len, "batch_size": 4, "seed": seed,
                                    "validation": {"windows": 0, "every": 0}, "checkpoint": {"every": 10**6}},
                                   INHERITED))
    stage.run(paths, cfg, teacher=teacher)
    t, m = sum_cross_entropy(load_model(run_dir / "student"), heldout)
    return round(s / n, 4), round(t / m, 4)


def _fitness_speed(args, teacher, data, budget: int) -> dict:
    """The shipped fitness against plain fp32 on the same candidates, timed interleaved in one run.

    Three arms: ``float32`` (the old path: fp32, every window), ``auto`` (the precision lever alone,
    every window) and ``shipped`` (``auto`` plus early abandonment against a population threshold:
    the worst of the best ``--population`` losses seen so far, as the evolution passes it).
    ``abandon_errors`` counts abandoned candidates whose full fp32 loss would have entered that
    population (a wrong abandonment).
    """
    from headstart.config.search import FitnessConfig
    from headstart.searching.bins import SizeGrid, make_bins
    from headstart.searching.fitness import Fitness
    from headstart.searching.operators import sample
    from headstart.searching.space import SearchSpace, default_space
    from headstart.searching.stage import load_windows
    from headstart.selection import Orders

    windows, _ = load_windows(*_job(args, data, budget, Path(args.results) / "speed"), teacher)
    space = SearchSpace(default_space(teacher.dims), teacher.adapter, Orders.first_k(teacher.dims))
    [table] = make_bins(SizeGrid(space), [budget], 0.1)
    rng = random.Random(0)
    specs = [space.to_spec(sample(space, table, rng)) for _ in range(args.speed_candidates)]
    fitness = {"float32": Fitness(teacher, windows, dtype="float32"), "auto": Fitness(teacher, windows, dtype="auto"),
               "shipped": Fitness(teacher, windows, dtype="auto", screen=FitnessConfig())}
    losses, seconds = {k: [] for k in fitness}, dict.fromkeys(fitness, 0.0)
    abandoned, errors = 0, 0
    for spec in specs:  # interleaved, so load changes hit all arms alike
        best = sorted(losses["shipped"])[:args.population]
        threshold = best[-1] if len(best) == args.population else None
        for name, fit in fitness.items():
            start = time.perf_counter()
            losses[name].append(fit(spec, threshold) if name == "shipped" else fit(spec))
            seconds[name] += time.perf_counter() - start
        if fitness["shipped"].abandoned:
            abandoned += 1
            errors += losses["float32"][-1] < threshold
    return {"candidates": len(specs), "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "precision_speedup": round(seconds["float32"] / seconds["auto"], 3),
            "fitness_speedup": round(seconds["float32"] / seconds["shipped"], 3),
            "abandoned": abandoned, "abandon_errors": errors,
            "rank_correlation": round(_spearman(losses["float32"], losses["auto"]), 4),
            "max_abs_diff": round(max(abs(a - b) for a, b in zip(losses["float32"], losses["auto"])), 4)}


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        for pos, i in enumerate(order):
            r[i] = float(pos)
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def _result(args, per: dict, speed: dict, heldout) -> dict:
    keys = ("heldout_loss", "trained_loss", "search_flops", "evals_per_min", "evaluations", "abandoned",
            "winner_params", "screen_best_heldout_loss")
    methods = {m: {key: [r.get(key) for r in runs] for key in keys} for m, runs in per.items()}
    for m in methods.values():
        m["heldout_ppl_median"] = round(math.exp(statistics.median(m["heldout_loss"])), 1)
    default, rand = per["default"], per["random-importance"]
    return {
        "teacher": args.model, "bin": default[0]["bin"], "evaluations": args.evaluations,
        "seeds": [r["seed"] for r in default], "heldout_tokens": int(heldout[:, 1:].numel()),
        "train_tokens": args.train_tokens, "rung_tokens": args.rung_tokens,
        "fitness_speedup": speed["fitness_speedup"], "rank_correlation": speed["rank_correlation"],
        "fitness_speed": speed, "methods": methods,
        "targets": {
            "default_median_heldout_ppl_le_234": methods["default"]["heldout_ppl_median"] <= 234,
            "default_trained_le_random_importance_every_seed": all(
                d["trained_loss"] <= r["trained_loss"] for d, r in zip(default, rand)),
            "fitness_speedup_ge_2": speed["fitness_speedup"] >= 2,
        },
        "torch_threads": __import__("torch").get_num_threads(),
        "versions": {name: metadata.version(name) for name in ("torch", "transformers", "tokenizers")},
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    main()
