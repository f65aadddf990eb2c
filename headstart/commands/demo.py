"""``headstart demo``: the embedded default, end to end (the README's first command)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from headstart.commands.run import summary as run_summary
from headstart.recipe import RecipeConfig

RECIPE = "demo.yaml"


def demo_text() -> str:
    """The embedded demo recipe (shipped inside the package), as written."""
    return resources.files("headstart.recipes").joinpath(RECIPE).read_text()


def demo_recipe() -> dict[str, Any]:
    """The embedded demo recipe as plain data."""
    return yaml.safe_load(demo_text())


def run(cfg: RecipeConfig, print_recipe: bool = False) -> Path | str:
    """Run the demo recipe (with any flag overrides), or return its text with ``print_recipe``."""
    if print_recipe:
        return demo_text().rstrip()
    from headstart.pipeline import Pipeline

    return Pipeline(cfg).run()


def summary(result: Path | str, cfg: RecipeConfig) -> str:
    """The recipe text, or where the report is and what it says."""
    return result if isinstance(result, str) else run_summary(result, cfg)
