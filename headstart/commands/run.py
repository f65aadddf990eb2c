"""``headstart run``: the whole pipeline from one recipe, every stage cached and resumable."""

from __future__ import annotations

import json
from pathlib import Path

from headstart.recipe import RecipeConfig


def run(cfg: RecipeConfig, stage: str | None = None) -> Path:
    """Run the recipe (up to ``stage``); returns the last stage's output directory."""
    from headstart.pipeline import Pipeline

    return Pipeline(cfg).run(only=stage)


def summary(result: Path, cfg: RecipeConfig) -> str:
    """Where the results are, and (after the report) each budget's comparison in a few lines."""
    data_path = result / "summary.json"
    if result.name != "report" or not data_path.is_file():
        return f"done: {result}"
    data = json.loads(data_path.read_text())
    lines = [f"report: {result / 'report.md'}"]
    for budget in data["budgets"]:
        lines.append(f"{budget['label']}: target = {budget['baseline']}'s final val loss {budget['target_loss']:.3f}")
        for row in budget["rows"]:
            ratio = (f"{row['token_ratio']:.2f}x fewer tokens" if row["token_ratio"]
                     else "at the target before training" if row.get("reached_at_start") else "target not reached")
            lines.append(f"  {row['label']:<28} val loss {row['final_loss']:.3f}  ppl {row['final_ppl']:8.1f}  {ratio}")
    return "\n".join(lines)
