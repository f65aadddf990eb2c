"""``headstart compare``: the paper's comparison — random init vs first-k vs searched, CE vs KD."""

from __future__ import annotations

import argparse
import json

from headstart.errors import ConfigError
from headstart.recipe import Recipe
from headstart.report import markdown_table
from headstart.stages import Pipeline

HELP = ("train the comparison runs of a recipe (random init CE, first-k KD, searched CE, searched KD) and "
        "report tokens and FLOPs to reach the random-init run's final loss")
CONFIG_IS_RECIPE = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart compare``."""
    p.add_argument("--out", help="output directory (overrides the recipe's `out`)")
    p.add_argument("--tokens", type=int, help="training tokens per run (overrides train.tokens)")


def run(args: argparse.Namespace) -> int:
    """Run (or finish) the comparison and print its table."""
    if not args.config:
        raise ConfigError("headstart compare needs --config recipe.yaml (see headstart/recipes/demo.yaml)")
    recipe = Recipe.load(args.config, overrides={"out": args.out})
    if args.tokens is not None:
        recipe.train["tokens"] = args.tokens
    report = Pipeline(recipe).run()
    rows = json.loads((report / "summary.json").read_text())["rows"]
    print(markdown_table(rows))
    print(f"report: {report / 'report.md'}")
    return 0
