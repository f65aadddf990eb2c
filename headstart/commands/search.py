"""``headstart search``: find the best sub-network of a teacher in each parameter budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from headstart.configs import SearchConfig


def run(cfg: SearchConfig, teacher: Any = None, progress: Any = None) -> Path:
    """Run (or resume) the search; returns ``cfg.out`` with the journal, best specs, summary and plot."""
    from headstart import parallel
    from headstart.commands.progress import Bars, SearchProgress
    from headstart.search.pipeline import run_job

    cfg.check_budget()
    check(cfg)
    if progress is None and parallel.rank() == 0:
        progress = SearchProgress()
    try:
        with Bars() as calibration:
            run_job(cfg, teacher=teacher, progress=progress, calibration=calibration)
    finally:
        if progress is not None and hasattr(progress, "close"):
            progress.close()
    return Path(cfg.out)


def check(cfg: SearchConfig) -> None:
    """Output path, device, data, window length and space, before the teacher loads."""
    from headstart import preflight
    from headstart.errors import ConfigError
    from headstart.models import get_adapter
    from headstart.search.space import load_space
    from headstart.teacher import model_config

    preflight.out_path(cfg.out)
    preflight.device(cfg.device)
    preflight.data_dir(cfg.data)
    config = model_config(cfg.teacher)
    preflight.seq_len(config, cfg.seq_len, "the teacher")
    space = load_space(cfg.space, get_adapter(config).dims, cfg.granularity, cfg.layout)
    if space.layout == "layer-wise" and not get_adapter(config).layerwise:
        raise ConfigError(f"--layout layer-wise: {config.model_type} students keep the same sizes in every layer; "
                          "use --layout uniform, or a Llama-family teacher")


def summary(out: Path, cfg: SearchConfig) -> str:
    """A table per bin and run (from ``summary.json``), evaluations per minute, and the output files."""
    data = json.loads((out / "summary.json").read_text())
    head = ("bin", "run", "evals", "best loss", "params", "layers", "hidden", "kv x heads", "mlp", "depth")
    rows = [head]
    for run in data["runs"]:
        for b in run["bins"]:
            s = b["best_sizes"]
            if s is None:
                rows.append((b["bin"]["label"], run["run"], str(b["evaluations"]), *["-"] * 7))
                continue
            most = "<=" if "layer_sizes" in s else ""  # layer-wise: the largest layer's sizes
            rows.append((b["bin"]["label"], run["run"], str(b["evaluations"]), f"{b['best_loss']:.3f}",
                         f"{b['best_params'] / 1e6:.1f}M", str(s["num_hidden_layers"]), str(s["hidden_size"]),
                         f"{most}{s['num_key_value_heads']}x{s['num_attention_heads'] // s['num_key_value_heads']}",
                         f"{most}{s['intermediate_size']}", str(b["best_depth"])))
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("evaluations per minute: " + ", ".join(f"{r['run']} {r['evaluations_per_minute']:.1f}"
                                                        for r in data["runs"]))
    lines += [f"{p.name}: {p}" for p in sorted(out.glob("best-*.yaml"))]
    lines += [f"{name}: {out / name}" for name in ("summary.json", "search.png", "journal.jsonl")
              if (out / name).exists()]
    return "\n".join(lines)
