"""The comparison report: validation curves, tokens and FLOPs to reach the baseline's final loss.

Every number comes from the runs' own metrics; FLOPs of a run include what it cost to *start* it
(the importance pass and the search for searched students) and the teacher's forward passes for
distilled runs, so that the saving is honest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunCurve:
    """One training run as the report sees it."""

    name: str  # short id, e.g. "searched-kd"
    label: str  # legend text
    tokens: list[float]  # training tokens at each validation point
    train_flops: list[float]  # student (+ teacher) training FLOPs at each validation point
    val_loss: list[float]
    setup_flops: float = 0.0  # importance pass + search, paid before the first step
    params: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def flops(self) -> list[float]:
        """Total FLOPs at each validation point, setup included."""
        return [self.setup_flops + f for f in self.train_flops]

    @property
    def final_loss(self) -> float:
        """Validation loss at the end of the run."""
        return self.val_loss[-1]


def crossing(xs: list[float], ys: list[float], target: float) -> float | None:
    """First ``x`` at which the curve ``ys`` reaches ``target`` or below, interpolated linearly
    between validation points; ``None`` if it never does."""
    for i, y in enumerate(ys):
        if y <= target:
            if i == 0 or ys[i - 1] == y:
                return xs[i]
            x0, y0 = xs[i - 1], ys[i - 1]
            return x0 + (xs[i] - x0) * (y0 - target) / (y0 - y)
    return None


def comparison_rows(runs: list[RunCurve], baseline: str) -> list[dict[str, Any]]:
    """One row per run: final loss/perplexity, tokens and FLOPs to reach the baseline's final loss,
    and the baseline's cost divided by the run's (``None`` where the target was never reached)."""
    base = next((r for r in runs if r.name == baseline), None)
    if base is None:
        raise ValueError(f"no run named {baseline!r} among {[r.name for r in runs]}")
    target = base.final_loss
    base_tokens, base_flops = base.tokens[-1], base.flops[-1]
    rows = []
    for run in runs:
        tok = crossing(run.tokens, run.val_loss, target)
        flops = crossing(run.flops, run.val_loss, target)
        rows.append({
            "run": run.name,
            "label": run.label,
            "params": run.params,
            "final_loss": run.final_loss,
            "final_ppl": math.exp(min(run.final_loss, 50.0)),
            "tokens_to_target": tok,
            "flops_to_target": flops,
            "token_ratio": (base_tokens / tok) if tok else None,
            "flops_ratio": (base_flops / flops) if flops else None,
            "setup_flops": run.setup_flops,
        })
    return rows


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "not reached"
    if kind == "ratio":
        return f"{v:.2f}×"
    if kind == "sci":
        return f"{v:.3g}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The report's main table."""
    head = ("| run | params | final val loss | final val ppl | tokens to target | FLOPs to target "
            "| token ratio | FLOPs ratio |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {r['label']} | {_fmt(r['params'])} | {r['final_loss']:.3f} | {r['final_ppl']:.1f} | "
        f"{_fmt(r['tokens_to_target'], 'sci')} | {_fmt(r['flops_to_target'], 'sci')} | "
        f"{_fmt(r['token_ratio'], 'ratio')} | {_fmt(r['flops_ratio'], 'ratio')} |\n"
        for r in rows
    )
    return head + body


def plot_curves(runs: list[RunCurve], path: str | os.PathLike[str], target: float | None = None,
                x: str = "tokens") -> Path:
    """Validation loss against tokens (or total FLOPs) for every run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for run in runs:
        xs = run.tokens if x == "tokens" else run.flops
        ax.plot(xs, run.val_loss, marker="o", markersize=3, label=run.label)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="target: random init's final loss")
    ax.set_xlabel("training tokens" if x == "tokens" else "total FLOPs (setup + training + teacher)")
    ax.set_ylabel("validation loss (nats)")
    ax.set_xscale("symlog")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
