"""The comparison report: validation curves, tokens and FLOPs to reach the baseline's final loss.

Every number comes from the runs' own metrics; FLOPs of a run include what it cost to *start* it
(the importance pass and the search for searched students) and the teacher's forward passes for
distilled runs, so that the saving is honest.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.io import atomic_file, read_jsonl, write_bytes, write_json, write_text


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
    and the baseline's cost divided by the run's (``None`` where the target was never reached, or
    was reached before the first step: ``reached_at_start``, an unbounded token ratio)."""
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
            "reached_at_start": tok == 0.0,
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


def markdown_table(rows: list[dict[str, Any]], windows: str = "val") -> str:
    """The report's main table; ``windows`` names the validation windows its losses are measured on."""
    head = (f"| run | params | final loss ({windows}) | final ppl | tokens to target | FLOPs to target "
            "| token ratio | FLOPs ratio |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(f"| {r['label']} | {_fmt(r['params'])} | {r['final_loss']:.3f} | {r['final_ppl']:.1f} | "
                   + (" — | — | — | — |\n" if r["run"] == "teacher" else _target_cells(r)) for r in rows)
    return head + body


def _target_cells(r: dict[str, Any]) -> str:
    ratio = "at the target before training" if r.get("reached_at_start") else _fmt(r.get("token_ratio"), "ratio")
    return (f"{_fmt(r.get('tokens_to_target'), 'sci')} | {_fmt(r.get('flops_to_target'), 'sci')} | {ratio} | "
            f"{_fmt(r.get('flops_ratio'), 'ratio')} |\n")


def plot_curves(runs: list[RunCurve], path: str | os.PathLike[str], target: float | None = None,
                x: str = "tokens", xmax: float | None = None, reference: float | None = None) -> Path | None:
    """Validation loss against tokens (or total FLOPs) for every run, as a PNG (``xmax``: where the x axis
    ends, default the data's; ``reference``: the teacher's loss, a dotted line); ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for run in runs:
        xs = run.tokens if x == "tokens" else run.flops
        ax.plot(xs, run.val_loss, marker="o", markersize=3, label=run.label)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="target: the baseline's final loss")
    if reference is not None:
        ax.axhline(reference, color="black", linestyle=":", linewidth=1, label="the teacher")
    ax.set_xlabel("training tokens" if x == "tokens" else "total FLOPs (setup + training + teacher)")
    ax.set_ylabel("validation loss (nats)")
    ax.set_xlim(left=0, right=xmax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_file(path, binary=True) as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)
    return Path(path)


# -- the pipeline's report -----------------------------------------------------------------------

def run_curve(run_dir: Path, name: str, label: str, setup_flops: float = 0.0, params: int = 0) -> RunCurve:
    """The validation curve of a training run directory (``metrics.jsonl``)."""
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("val_loss") is not None]
    by_step = {int(r["step"]): r for r in rows}  # a resumed run may repeat steps: keep the last
    rows = [by_step[s] for s in sorted(by_step)]
    initial = run_dir / "initial.json"
    if initial.is_file():  # the starting point: what the sub-network (or random init) scores untrained
        start = {"step": 0, "tokens": 0, **json.loads(initial.read_text())}
        # a run that continues earlier training (rung-kd) starts at the tokens already spent on it
        rows = [start] + [{**r, "tokens": float(r["tokens"]) + float(start["tokens"])} for r in rows]
    return RunCurve(
        name=name, label=label, tokens=[float(r["tokens"]) for r in rows],
        train_flops=[float(r.get("student_flops", 0)) + float(r.get("teacher_flops", 0)) for r in rows],
        val_loss=[float(r["val_loss"]) for r in rows], setup_flops=setup_flops, params=params,
    )


def setup_costs(out: Path, recipe: Any, teacher_flops_per_token: int, bin_index: int) -> dict[str, float]:
    """FLOPs paid before training a searched student of bin ``bin_index``: the importance pass (shared
    by every budget, charged in full to each), the main search run's evaluations in that bin (an
    abandoned one at what it scored) and its training-aware rungs."""
    search = recipe.search
    importance = float(teacher_flops_per_token) * search.fitness.calibration_windows * search.seq_len
    main = f"{search.evolution.strategy}/{search.space.order}"
    cost = sum(float(r.get("scored_flops", float(r.get("flops", 0)) * search.fitness.windows * search.seq_len))
               for r in read_jsonl(out / "search" / "journal.jsonl")[1:]
               if r.get("run") == main and int(r.get("bin", -1)) == bin_index and not r.get("reused"))
    summary = json.loads((out / "search" / "summary.json").read_text())
    rungs = sum(float(r["flops"]) for b in summary.get("rungs", []) if b["bin"] == bin_index for r in b["results"])
    return {"importance": importance, "search": cost, "rungs": rungs}


def budget_report(out: Path, recipe: Any, label: str, index: int, teacher: dict[str, Any],
                  rep: Path) -> dict[str, Any]:
    """One budget's comparison: rows, target, setup costs, evaluations and plots (under ``rep/label``)."""
    from headstart.config.recipe import RUN_LABELS, RUNS

    evals = {n: json.loads((out / "eval" / label / f"{n}.json").read_text()) for n in recipe.compare.runs}
    reference = json.loads((out / "eval" / "teacher.json").read_text())
    costs = setup_costs(out, recipe, teacher["flops_per_token"], index)
    runs = []
    for name in recipe.compare.runs:
        setup = costs["importance"] + costs["search"] + costs["rungs"] if RUNS[name][0] in ("searched", "rung") else 0.0
        runs.append(run_curve(out / "runs" / label / name, name, RUN_LABELS[name], setup, evals[name]["params"]))
    rows = comparison_rows(runs, recipe.compare.baseline)
    target = next(r.final_loss for r in runs if r.name == recipe.compare.baseline)
    (rep / label).mkdir(parents=True, exist_ok=True)
    teacher_loss = float(reference["loss"])
    plots = [plot_curves(runs, rep / label / f"loss_vs_{x}.png", target, x, reference=teacher_loss)
             for x in ("tokens", "flops")]
    plots = [p for p in plots if p is not None]
    rows.append({"run": "teacher", "label": "teacher (reference)", "params": teacher["params"],
                 "final_loss": teacher_loss, "final_ppl": math.exp(min(teacher_loss, 50.0))})
    students = {n: _student(out / "runs" / label / n / "student") for n in recipe.compare.runs}
    return {"label": label, "rows": rows, "setup_flops": costs, "target_loss": target, "windows": reference["windows"],
            "baseline": recipe.compare.baseline, "eval": evals, "students": students,
            "plots": [str(p.relative_to(rep)) for p in plots]}


_HF_SIZES = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
             "vocab_size")


def _student(path: Path) -> dict[str, Any]:
    """Where a trained student is and its sizes with Hugging Face names (from its config.json)."""
    config = json.loads((path / "config.json").read_text())
    sizes = {k: config[k] for k in _HF_SIZES if k in config}
    return {"path": str(path), "model_type": config.get("model_type"), **sizes, "layer_wise": "auto_map" in config}


def write_report(out: str | os.PathLike[str], recipe: Any, labels: list[str]) -> Path:
    """Write ``OUT/report/`` (report.md, plots, summary.json) from the pipeline's outputs, every budget."""
    out = Path(out)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    search_summary = json.loads((out / "search" / "summary.json").read_text())
    teacher = json.loads((out / "search" / "teacher.json").read_text())
    budgets = [budget_report(out, recipe, label, i, teacher, rep) for i, label in enumerate(labels)]
    if not (out / "search" / "search.png").is_file():  # drawn now if matplotlib came after the search
        from headstart.searching.report import plot_journal

        plot_journal(out / "search" / "journal.jsonl", search_summary, out / "search" / "search.png")
    if (out / "search" / "search.png").is_file():
        write_bytes(rep / "search.png", (out / "search" / "search.png").read_bytes())
    summary = {"budgets": budgets, "search": search_summary}
    write_json(rep / "summary.json", summary, default=str)
    write_text(rep / "report.md", _markdown(recipe, budgets, search_summary, (rep / "search.png").is_file()))
    return rep


_NO_PLOTS = "*(plots skipped: matplotlib is not installed; `pip install 'headstart[plot]'` draws them)*"


def _budget_markdown(b: dict[str, Any]) -> list[str]:
    costs, rows = b["setup_flops"], b["rows"]
    lines = [f"## Budget {b['label']}", ""]
    lines += [f"![validation loss against training tokens]({b['label']}/loss_vs_tokens.png)"
              if b["plots"] else _NO_PLOTS, ""]
    lines += [
        f"Target: the final validation loss of `{b['baseline']}`, **{b['target_loss']:.3f}** nats. "
        "*Tokens/FLOPs to target* is where each run first reaches it (interpolated between validation "
        "points); the ratios divide the baseline's full budget by that. FLOPs count 3× the student's forward "
        "FLOPs per training token, the teacher's forward FLOPs per distilled token, and, for searched "
        f"students, the importance pass ({costs['importance']:.3g} FLOPs) and every evaluation of the search "
        f"in this budget ({costs['search']:.3g} FLOPs) and its training-aware rungs ({costs['rungs']:.3g} FLOPs).",
        "",
        markdown_table(rows, b["windows"]),
    ]
    if any(r["tokens_to_target"] is None for r in rows):
        lines += ["Runs marked *not reached* never got to the target within the budget: their ratios are "
                  "undefined, not zero. Raise `train.tokens` to measure them.", ""]
    if b["plots"]:
        lines += [f"![validation loss against total FLOPs]({b['label']}/loss_vs_flops.png)", ""]
    lines += ["Students after training:", ""]
    for name, e in b["eval"].items():
        st = b["students"][name]
        sizes = ", ".join(f"{k} {st[k]}" for k in _HF_SIZES if k in st)
        note = " (layer-wise: load with `trust_remote_code=True`)" if st["layer_wise"] else ""
        lines.append(f"- `{name}`: `{st['path']}`, {st['model_type']}, {sizes}, {e['params']:,} parameters{note}")
        for s in e.get("samples", [])[:1]:
            lines.append(f"  - sample: {s[:160].replace(chr(10), ' ')!r}")
    return lines + [""]


def _markdown(recipe: Any, budgets: list[dict[str, Any]], search: dict[str, Any], search_plot: bool) -> str:
    lines = [
        "# headstart report",
        "",
        f"Teacher `{recipe.teacher}`, corpus {', '.join(recipe.corpus)}, student budget(s) "
        f"{recipe.search.params} parameters, {recipe.train.tokens:,} training tokens per run.",
        "",
    ]
    for b in budgets:
        lines += _budget_markdown(b)
    lines += ["## Search", "", "![loss of every candidate against its parameters](search.png)" if search_plot
              else _NO_PLOTS, ""]
    for run in search.get("runs", []):
        for b in run["bins"]:
            loss, sizes = b["best_loss"], b["best_sizes"] or {}
            shown = ", ".join(f"{k} {v}" for k, v in sizes.items() if k != "layer_sizes") or "none"
            lines.append(f"- `{run['run']}`, bin {b['bin'].get('label', '')}: {b['evaluations']} evaluations, best "
                         f"untrained loss {'-' if loss is None else round(loss, 3)}, {shown}")
    return "\n".join(lines) + "\n"
