"""``headstart run``: the whole pipeline from one recipe, every stage cached and resumable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headstart.recipe import Recipe
from headstart.stages import STAGES, Pipeline

HELP = "run the whole pipeline from a recipe: prepare, importance, search, train, eval, report"
CONFIG_IS_RECIPE = True  # --config is the recipe itself, not a file of this command's flags


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart run``."""
    p.add_argument("--out", help="output directory (overrides the recipe's `out`)")
    p.add_argument("--stage", choices=STAGES, help="run up to this stage only (and what it needs)")


def run(args: argparse.Namespace) -> int:
    """Run the recipe and print where the results are."""
    if not args.config:
        from headstart.errors import ConfigError

        raise ConfigError("headstart run needs --config recipe.yaml (see headstart/recipes/demo.yaml)")
    recipe = Recipe.load(args.config, overrides={"out": args.out})
    result = Pipeline(recipe).run(only=args.stage)
    print_summary(result)
    return 0


def print_summary(result: Path) -> None:
    """Where the results are, and (after the report) the comparison in five lines."""
    summary = result / "summary.json"
    if result.name != "report" or not summary.is_file():
        print(f"done: {result}")
        return
    data = json.loads(summary.read_text())
    print(f"report: {result / 'report.md'}")
    for row in data["rows"][:4]:
        ratio = (f"{row['token_ratio']:.2f}x fewer tokens" if row["token_ratio"]
                 else "at the target before training" if row.get("reached_at_start") else "target not reached")
        print(f"  {row['label']:<28} val loss {row['final_loss']:.3f}  ppl {row['final_ppl']:8.1f}  {ratio}")
    print(f"  target: {data['baseline']}'s final val loss {data['target_loss']:.3f}")
