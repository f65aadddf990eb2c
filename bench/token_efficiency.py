"""Token efficiency: the paper's comparison at a larger budget, as tokens- and FLOPs-to-target ratios.

Runs the pipeline (``headstart run``) on a recipe, by default the embedded demo's (SmolLM2-135M
teacher, Shakespeare, a ~50M student), with every run's budget set to ``--tokens``. In two passes:

1. the random-initialisation baseline (CE only) trains for the whole budget; its final validation
   loss is the target;
2. the other runs train on the same schedule (the same budget, so the same learning-rate curve) with
   ``--target-loss`` set to that target, so each stops at the first validation that reaches it
   (``--full`` trains them to the end instead). Up to that point a stopped run is step for step the
   full run, so its tokens and FLOPs to the target are the same.

Then the pipeline evaluates every student and writes its report (``OUT/report/``); this script writes
the comparison rows and the searched+KD student's ratios against random initialisation as JSON.
FLOPs are counted as in the report: student training FLOPs, the teacher's forward passes for
distilled runs, and, for searched students, the importance pass and every search evaluation.

    .venv/bin/python bench/token_efficiency.py                  # 1M tokens per run, ~1-2 h on 2 cores
    .venv/bin/python bench/token_efficiency.py --tokens 200000  # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from headstart.commands.demo import demo_recipe
from headstart.pipeline import Pipeline
from headstart.recipe import RUNS, RecipeConfig, load_recipe
from headstart.report import run_curve

PAPER_TOKEN_RATIO = 9.2  # "Where to Begin" (arXiv 2510.07227): searched + KD vs random init, tokens


def _shown(path: Path) -> str:
    """``path`` as the JSON records it: relative to the working directory when under it (no machine paths)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def build_recipe(args: argparse.Namespace, runs: list[str], target: float | None) -> RecipeConfig:
    """The recipe of one pass: the demo's (or --recipe), resized, with the target on the non-baseline runs."""
    data = yaml.safe_load(Path(args.recipe).read_text()) if args.recipe else demo_recipe()
    data["out"] = str(args.out)
    data["seed"] = args.seed
    steps = args.tokens // (data["train"].get("batch_size", 8) * data["train"].get("seq_len", 256))
    data["train"].update(tokens=args.tokens, eval_every=args.eval_every or max(1, steps // args.evals),
                         save_every=max(1, steps // 10))
    if args.evaluations:
        data["search"]["evaluations"] = args.evaluations
    compare = data.setdefault("compare", {})
    compare["runs"] = runs
    compare["baseline"] = "random-ce"
    if target is not None and not args.full:
        compare["overrides"] = {name: {"target_loss": target} for name in runs if name != "random-ce"}
    return load_recipe(data, where="the token-efficiency recipe")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1_000_000, help="training tokens per run (default %(default)s)")
    p.add_argument("--runs", nargs="+", default=["random-ce", "searched-ce", "searched-kd"], choices=list(RUNS),
                   help="runs besides the random-init baseline (default: %(default)s; first-k-kd costs a full "
                        "budget whenever it never reaches the target)")
    p.add_argument("--recipe", help="recipe YAML to start from (default: the embedded demo recipe)")
    p.add_argument("--evaluations", type=int, help="search evaluations (default: the recipe's)")
    p.add_argument("--evals", type=int, default=100, help="validations over the full budget (default %(default)s)")
    p.add_argument("--eval-every", type=int, help="steps between validations (overrides --evals)")
    p.add_argument("--full", action="store_true", help="train every run for the whole budget (no early stop)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "token_efficiency")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "token_efficiency.json")
    args = p.parse_args()
    runs = ["random-ce", *[r for r in args.runs if r != "random-ce"]]
    t0 = time.time()
    first = Pipeline(build_recipe(args, ["random-ce"], None))
    first.run(only="train")
    baseline_s = time.time() - t0
    runs_dir = args.out / "runs" / first.labels[0]
    target = run_curve(runs_dir / "random-ce", "random-ce", "").final_loss
    print(f"target: the random-init run's final validation loss, {target:.4f}", flush=True)
    recipe = build_recipe(args, runs, target)
    report_dir = Pipeline(recipe).run()
    summary = json.loads((report_dir / "summary.json").read_text())["budgets"][0]
    rows = {r["run"]: r for r in summary["rows"]}
    trained = {}  # tokens each run actually trained (less than the budget where it stopped at the target)
    for name in runs:
        lines = (runs_dir / name / "metrics.jsonl").read_text().splitlines()
        trained[name] = json.loads(lines[-1])["tokens"]
    kd = rows.get("searched-kd", {})
    result = {
        "setup": {"tokens_per_run": args.tokens, "runs": runs, "early_stop": not args.full, "seed": args.seed,
                  "recipe": {**recipe.to_dict(), "out": _shown(args.out)},
                  "cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "target_loss": target,
        "rows": summary["rows"],
        "setup_flops": summary["setup_flops"],
        "trained_tokens": trained,
        "searched_kd_vs_random": {"tokens_ratio": kd.get("token_ratio"), "flops_ratio": kd.get("flops_ratio"),
                                  "paper_tokens_ratio": PAPER_TOKEN_RATIO},
        "wall_s": {"baseline": baseline_s, "total": time.time() - t0},
        "report": _shown(report_dir / "report.md"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, args.json)
    print(json.dumps({k: result[k] for k in ("target_loss", "searched_kd_vs_random", "trained_tokens", "wall_s")},
                     indent=1))


if __name__ == "__main__":
    main()
