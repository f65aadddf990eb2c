"""``headstart compare``: the paper's comparison — random init vs first-k vs searched, CE vs KD."""

from __future__ import annotations

import json
from pathlib import Path

from headstart.recipe import RecipeConfig


def run(cfg: RecipeConfig) -> Path:
    """Run (or finish) the whole pipeline; returns the report directory."""
    from headstart.pipeline import Pipeline

    return Pipeline(cfg).run()


def summary(report: Path, cfg: RecipeConfig) -> str:
    """Every budget's comparison table, as in report.md."""
    from headstart.report import markdown_table

    data = json.loads((report / "summary.json").read_text())
    parts = [f"### {b['label']}\n\n{markdown_table(b['rows'])}" for b in data["budgets"]]
    return "\n".join(parts) + f"\nreport: {report / 'report.md'}"
