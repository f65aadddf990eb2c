"""The paper's four search spaces side by side on the real teacher: coarse / fine x uniform / layer-wise.

SmolLM2-135M (builtin, offline) on Shakespeare (builtin corpus), the bin 45-55 % of the teacher's
parameters. Every space gets the same search (evolution in importance order, untrained ranking, no
rungs, so that only the space differs), the same evaluations and the same seeds. Each space's winner
is scored untrained on fixed ``val`` windows the search never saw (``heldout_loss``), then trained
with the same fixed budget (KD from the teacher) and scored again (``trained_loss``), exactly as in
``bench/search_quality.py``, whose helpers it uses.

Resumable space by space: every (space, seed) result is a JSON file under
``bench/results/search_spaces/``; a rerun skips what is finished. Writes ``docs/search_spaces.json``.

    python bench/search_spaces.py [--seeds 0,1,2] [--evaluations 24] [--train-tokens 20000]

The committed JSON ran with OMP_NUM_THREADS=1, about 9 minutes per space and seed on 2 AVX2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_quality as sq  # noqa: E402 (the sibling benchmark's job, scoring and caching)

SPACES = (("coarse", "uniform"), ("fine", "uniform"), ("coarse", "layer-wise"), ("fine", "layer-wise"))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0")
    p.add_argument("--evaluations", type=int, default=24, help="untrained evaluations per space and seed")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--windows", type=int, default=8, help="search-split windows per evaluation")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--heldout-windows", type=int, default=16, help="val windows the winners are scored on")
    p.add_argument("--train-tokens", type=int, default=20_000, help="training budget of every winner")
    p.add_argument("--out", default=str(sq.ROOT / "docs" / "search_spaces.json"))
    p.add_argument("--results", default=str(sq.ROOT / "bench" / "results" / "search_spaces"))
    p.add_argument("--model", default="builtin:smollm2-135m", help=argparse.SUPPRESS)
    p.add_argument("--corpus", default="builtin:shakespeare", help=argparse.SUPPRESS)
    p.add_argument("--fraction", type=float, default=0.5, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.rung_tokens, args.generation_size = 4096, 1  # no rungs; steady-state evolution, as search_quality
    return args


def main() -> None:
    args = _args()
    sq._reexec_with_malloc_settings()
    from headstart.io import write_json

    teacher, data, heldout, budget, results = sq.setup(args)
    per: dict[str, list[dict]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for granularity, layout in SPACES:
            name = f"{granularity}/{layout}"
            per.setdefault(name, []).append(sq._cached(
                results / f"{granularity}-{layout}-seed{seed}.json",
                lambda g=granularity, lay=layout, s=seed: _space(args, teacher, data, heldout, budget, g, lay, s)))
    result = _result(args, per, heldout)
    write_json(args.out, result)
    print(json.dumps(result["table"], indent=1))


def _space(args, teacher, data, heldout, budget: int, granularity: str, layout: str, seed: int) -> dict:
    from headstart.searching import stage
    from headstart.searching.report import summary
    from headstart.spec import SubnetSpec

    out = Path(args.results) / f"{granularity}-{layout}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    job = sq._job(args, data, budget, out, seed=seed, space={"granularity": granularity, "layout": layout},
                  rungs={"count": 0})
    start = time.perf_counter()
    outcome = stage.run(*job, teacher=teacher)
    seconds = time.perf_counter() - start
    run = summary(outcome)["runs"][0]
    best = out / f"best-{outcome.tables[0].bin.label}.yaml"
    heldout_loss, trained_loss = sq._score(args, teacher, data, heldout, best, out / "trained", seed)
    spec = SubnetSpec.load(best)
    return {"space": f"{granularity}/{layout}", "seed": seed, "bin": outcome.tables[0].bin.to_dict(),
            "evaluations": run["bins"][0]["evaluations"], "search_loss": run["bins"][0]["best_loss"],
            "params": run["bins"][0]["best_params"], "winner": spec.describe(), "layer_wise": not spec.uniform,
            "search_seconds": round(seconds, 1), "heldout_loss": heldout_loss, "trained_loss": trained_loss}


def _result(args, per: dict[str, list[dict]], heldout) -> dict:
    def stats(runs: list[dict], key: str) -> dict:
        values = [r[key] for r in runs]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return {f"{key}_median": statistics.median(values), f"{key}_mean": round(statistics.fmean(values), 4),
                f"{key}_sd": round(sd, 4), f"{key}_per_seed": values}

    table = {
        name: {**stats(runs, "heldout_loss"), **stats(runs, "trained_loss"),
               "heldout_ppl_median": round(math.exp(statistics.median(r["heldout_loss"] for r in runs)), 1),
               "params": [r["params"] for r in runs], "winners": [r["winner"] for r in runs]}
        for name, runs in per.items()
    }
    return {
        "teacher": args.model, "bin": next(iter(per.values()))[0]["bin"], "evaluations": args.evaluations,
        "seeds": [r["seed"] for r in next(iter(per.values()))], "windows": args.windows, "seq_len": args.seq_len,
        "heldout_tokens": int(heldout[:, 1:].numel()), "train_tokens": args.train_tokens, "table": table,
        "best_untrained": min(table, key=lambda k: table[k]["heldout_loss_mean"]),
        "best_trained": min(table, key=lambda k: table[k]["trained_loss_mean"]),
        "runs": per, "torch_threads": __import__("torch").get_num_threads(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    main()
