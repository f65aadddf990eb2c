"""``headstart demo``: the embedded default, end to end (the README's first command)."""

from __future__ import annotations

import argparse
from importlib import resources

import yaml

from headstart.commands.run import print_summary
from headstart.recipe import Recipe
from headstart.stages import Pipeline

HELP = "run the embedded demo: SmolLM2-135M -> a half-size student on Shakespeare, compared with random init"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart demo``."""
    p.add_argument("--out", default="runs/demo", help="output directory (default %(default)s)")
    p.add_argument("--tokens", type=int, help="training tokens per run (default: the recipe's)")
    p.add_argument("--evaluations", type=int, help="search evaluations (default: the recipe's)")
    p.add_argument("--print-recipe", action="store_true", help="print the demo recipe and exit")


def demo_recipe() -> dict:
    """The embedded demo recipe as plain data."""
    return yaml.safe_load(resources.files("headstart.recipes").joinpath("demo.yaml").read_text())


def run(args: argparse.Namespace) -> int:
    """Run the demo recipe."""
    data = demo_recipe()
    if args.print_recipe:
        print(yaml.safe_dump(data, sort_keys=False))
        return 0
    data["out"] = args.out
    if args.tokens is not None:
        data["train"]["tokens"] = args.tokens
    if args.evaluations is not None:
        data["search"]["evaluations"] = args.evaluations
    print_summary(Pipeline(Recipe.from_dict(data, where="the demo recipe")).run())
    return 0
