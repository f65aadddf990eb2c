"""Search outputs for people: a summary (JSON-ready), a terminal table, and a loss-vs-parameters plot.

matplotlib is imported only when a plot is drawn; without it the plot is skipped with a warning.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from headstart.io import atomic_file
from headstart.searching.bins import format_params
from headstart.searching.outcome import SearchOutcome

log = logging.getLogger(__name__)

_MARKERS = {"evolution": "o", "random": "x"}
_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]


def _loss(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summary(outcome: SearchOutcome) -> dict[str, Any]:
    """Per run and bin: evaluations, best loss, its params/FLOPs/sizes/layers; runs' speed."""
    runs = []
    for run in outcome.runs:
        bins = []
        for state in run.bins:
            best = state.best
            bins.append({
                "bin": state.table.bin.to_dict(),
                "evaluations": len(state.candidates),
                "best_loss": _loss(best.loss) if best else None,
                "best_params": best.params if best else None,
                "best_flops_per_token": best.flops if best else None,
                "best_sizes": best.spec.sizes() if best else None,
                "best_layers": list(best.spec.layers) if best else None,
                "best_depth": best.genome.depth if best else None,
            })
        runs.append({"run": run.name, "strategy": run.strategy, "order": run.order, "computed": run.computed,
                     "seconds": round(run.seconds, 2), "evaluations_per_minute": round(run.evaluations_per_minute, 2),
                     "abandoned": sum(1 for s in run.bins for c in s.candidates if c.abandoned),
                     "screening_flops": run.flops, "bins": bins})
    rungs = [{"bin": i, "results": [
        {"spec_hash": r.candidate.spec_hash, "rung": r.rung, "tokens": r.tokens, "loss": r.loss,
         "untrained_loss": _loss(r.candidate.loss), "flops": r.flops} for r in outcome.rungs.get(t.bin.label, [])]}
        for i, t in enumerate(outcome.tables)]
    return {"teacher": outcome.teacher_source, "out": str(outcome.out), "runs": runs, "rungs": rungs,
            "flops": outcome.flops()}


def table(outcome: SearchOutcome) -> str:
    """A plain-text table: one row per bin and run."""
    head = ("bin", "run", "evals", "best loss", "params", "layers", "hidden", "kv x heads", "mlp", "depth")
    rows = [head]
    for i, t in enumerate(outcome.tables):
        for run in outcome.runs:
            state = run.bins[i]
            best = state.best
            if best is None:
                rows.append((t.bin.label, run.name, "0", "-", "-", "-", "-", "-", "-", "-"))
                continue
            s, most = best.spec.shape, "" if best.spec.uniform else "<="  # layer-wise: the largest layer's
            rows.append((
                t.bin.label, run.name, str(len(state.candidates)), f"{best.loss:.3f}", format_params(best.params),
                str(s.num_hidden_layers), str(s.hidden_size), f"{most}{s.num_key_value_heads}x{s.heads_per_group}",
                f"{most}{s.intermediate_size}", best.genome.depth,
            ))
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    speed = ", ".join(f"{r.name} {r.evaluations_per_minute:.1f}/min" for r in outcome.runs)
    return "\n".join(lines) + f"\nevaluations per minute: {speed}"


def plot(outcome: SearchOutcome, path: str | os.PathLike[str]) -> Path | None:
    """Loss against parameters for every candidate of every run; bins shaded, each run's best per bin
    marked with a star. Returns the PNG path, or ``None`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed, so no plot was drawn (pip install 'headstart[plot]')")
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, t in enumerate(outcome.tables):
        ax.axvspan(t.bin.lo / 1e6, t.bin.hi / 1e6, color="0.92" if i % 2 else "0.85", zorder=0)
    finite = []
    for k, run in enumerate(outcome.runs):
        color = _COLORS[k % len(_COLORS)]
        pts = [(c.params / 1e6, c.loss) for s in run.bins for c in s.candidates if math.isfinite(c.loss)]
        finite += [y for _, y in pts]
        if pts:
            ax.scatter(*zip(*pts), s=14, alpha=0.5, color=color, marker=_MARKERS.get(run.strategy, "o"),
                       label=f"{run.name} ({len(pts)})")
        bests = [s.best for s in run.bins if s.best is not None and math.isfinite(s.best.loss)]
        if bests:
            ax.scatter([b.params / 1e6 for b in bests], [b.loss for b in bests], s=180, marker="*", color=color,
                       edgecolors="black", zorder=5, label=f"best of {run.name}")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("loss of the untrained sub-network (nats)")
    ax.set_title(f"search on {outcome.teacher_source}")
    if finite and max(finite) / max(min(finite), 1e-9) > 5:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_file(path, binary=True) as fh:
            fig.savefig(fh, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


def plot_journal(journal: str | os.PathLike[str], summary: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """The search plot redrawn from the journal and ``summary.json`` (when matplotlib came after the search)."""
    from types import SimpleNamespace

    from headstart.io import read_jsonl
    from headstart.searching.bins import Bin

    records = [r for r in read_jsonl(journal) if "loss" in r and "run" in r]
    runs = []
    for run in summary.get("runs", []):
        bins = []
        for b in run["bins"]:
            index = int(b["bin"]["index"])
            cands = [SimpleNamespace(params=int(r["params"]), loss=float(r["loss"])) for r in records
                     if r["run"] == run["run"] and int(r.get("bin", -1)) == index]
            best = min(cands, key=lambda c: c.loss, default=None)
            bins.append(SimpleNamespace(candidates=cands, best=best))
        runs.append(SimpleNamespace(name=run["run"], strategy=run["strategy"], bins=bins))
    tables = [SimpleNamespace(bin=Bin(int(b["bin"]["index"]), int(b["bin"]["lo"]), int(b["bin"]["hi"])))
              for b in (summary["runs"][0]["bins"] if summary.get("runs") else [])]
    outcome = SimpleNamespace(tables=tables, runs=runs, teacher_source=summary.get("teacher", "teacher"))
    return plot(outcome, path)  # type: ignore[arg-type]
