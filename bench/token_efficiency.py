"""Token efficiency, resumable run by run: tokens and FLOPs to reach random init's final loss.

For every seed, the demo recipe (or ``--recipe``) is prepared and searched once (``OUT/seed<S>/``:
the seed changes the search, the students' init and the data order). For every budget (training
tokens), the random-init baseline (CE only) trains for the whole budget first; its final validation
loss is that (budget, seed)'s target, and every other run trains on the same schedule with
``validation.target_loss`` set to it, so it stops at the first validation that reaches it (``--full`` trains to
the end). Every run writes its result to ``OUT/results/<budget>/seed<S>/<run>.json``; a rerun skips
finished runs and resumes an interrupted one from its newest checkpoint, so the measurement can be
completed in parts and extended by a seed, a budget or a run later.

Validation uses ``--val-windows`` fixed windows of the val split (128 x 128 = 16,384 predicted
tokens by default), the same windows for every run and seed. FLOPs count 3x the student's forward per
training token, the teacher's forward for every token trained while distillation is on, and for
searched students the importance pass, every search evaluation, and the reconstruction pass
(teacher forward, Gram accumulation and solves) where the run starts from reconstructed weights.

The runs (``--runs``; the baseline always comes first) are the variants of :data:`VARIANTS`, each
changing one lever of ``searched-kd`` or ``searched-ce``. The summary (``--json``) lists per budget
and run the per-seed token and FLOPs ratios against random init, with their mean and spread, and a
power-law fit of each ratio against the budget; it prints as a Markdown table. Beside it go a plot of
the ratios against the budget and, per budget, its lowest seed's validation curves.
``--merge FILE`` keeps the runs of an earlier summary whose run files are gone (the committed grid) and
rebuilds the baselines missing from ``OUT`` from it, so new variants meet the same targets.
``--starts FILE`` only measures each seed's untrained starts (random, searched, reconstructed from the
teacher's inputs and from the student's own).

    .venv/bin/python bench/token_efficiency.py --budgets 250000 --seeds 0
    .venv/bin/python bench/token_efficiency.py --budgets 125000,250000,500000 --seeds 0,1,2 --rungs 0  # ~5 core-hours

The 1M budget over 3 seeds, added to the committed grid (~4.5 core-hours)::

    .venv/bin/python bench/token_efficiency.py --budgets 1000000 --seeds 0,1,2 --rungs 0 --eval-every 8
        --runs searched-ce,searched-kd,searched-ce-w1 --merge docs/token_efficiency.json
        --json docs/token_efficiency.json

The schedules of inherited weights at 1M against the same baselines (their run files are reused):
``--runs searched-ce-w1-lr5,searched-ce-w1-lr3,searched-ce-w1-lr5-n01,searched-kd-w1-lr5,``
``searched-kd-w1-lr5-early`` (~3 core-hours). The half batch and the short schedules against the
committed baselines, rebuilt from the summary (``--merge``; their run files are gone)::

    .venv/bin/python bench/token_efficiency.py --budgets 1000000 --seeds 0,1,2 --rungs 0 --eval-every 8
        --runs searched-kd-early-h16,searched-kd-early-h16-b4,searched-kd-w1-lr5-early-b4,searched-ce-w1-lr5-b4,
        searched-kd-w1-lr5-b4 --merge docs/token_efficiency.json --json docs/token_efficiency.json

and random init at the half batch against the same targets (``--runs random-ce-b4``, ``--eval-every 16``
at 125k, ``64`` at 1M). The alpha pair (``--budgets 1000000 --runs searched-kd-w1-lr5-b4-a2,``
``searched-kd-w1-lr5-b4-a8``) and the cached teacher (``--budgets 250000,500000,1000000 --runs``
``searched-kd-w1-lr5-b4-cache``), each with ``--eval-every 8 --merge docs/token_efficiency.json``: 4.0
process-hours at one thread each, 1 h 50 min with three or four side by side on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from headstart.cli.summaries import demo_recipe
from headstart.config import TrainConfig, TrainPaths, build, load_recipe
from headstart.config.fields import merge
from headstart.io import write_json
from headstart.pipeline import Pipeline
from headstart.report import RunCurve, crossing, plot_curves, run_curve, setup_costs

PAPER_TOKEN_RATIO = 9.2  # "Where to Begin" (arXiv 2510.07227): searched + KD vs random init, tokens
CALIB = (64, 128)  # reconstruction: calibration windows x tokens from the train split
CACHE_K = 64  # teacher log-probs kept per token by the cached variants

#: run name -> how it starts ("random" or "searched"), whether its weights are reconstructed, and
#: the train options it changes from the recipe's train section (distilled unless ``kd: none``).
CE = {"kind": "none"}  # kd section of the runs without distillation
W1_LR5 = {"schedule": {"warmup": 0.01}, "optim": {"lr": 5e-4}}  # the schedule of a student cut from the teacher
VARIANTS: dict[str, dict[str, Any]] = {
    "random-ce": {"init": "random", "train": {"kd": CE}},
    "random-ce-b4": {"init": "random", "train": {"kd": CE, "batch_size": 4}},  # is the baseline's batch fair?
    "searched-ce": {"init": "searched", "train": {"kd": CE}},
    "searched-ce-rec": {"init": "searched", "reconstruct": True, "train": {"kd": CE}},
    "searched-ce-w1": {"init": "searched", "train": {"kd": CE, "schedule": {"warmup": 0.01}}},
    "searched-ce-w1-lr5": {"init": "searched", "train": {"kd": CE, **W1_LR5}},
    "searched-ce-w1-lr3": {"init": "searched", "train": {"kd": CE, "schedule": {"warmup": 0.01},
                                                         "optim": {"lr": 3e-4}}},
    "searched-ce-w1-lr5-n01": {"init": "searched", "train": {"kd": CE, "schedule": {"warmup": 0.01},
                                                             "optim": {"lr": 5e-4, "norm_lr": 0.1}}},
    "searched-kd": {"init": "searched", "train": {}},
    "searched-kd-w1-lr5": {"init": "searched", "train": W1_LR5},
    "searched-kd-w1-lr5-early": {"init": "searched", "train": {**W1_LR5, "kd": {"until": 0.03}}},
    # A schedule sized to the head start: the whole schedule spans `horizon` of the budget (then the run
    # ends), with the 10-step warmup and 5e-4 peak above and KD for its first ~30k tokens at 1M.
    "searched-kd-early-h16": {"init": "searched", "horizon": 1 / 16,
                              "train": {"schedule": {"warmup": 10}, "optim": {"lr": 5e-4}, "kd": {"until": 0.5}}},
    "searched-kd-early-h16-b4": {"init": "searched", "horizon": 1 / 16,  # half the batch: twice the steps
                                 "train": {"schedule": {"warmup": 20}, "optim": {"lr": 5e-4}, "kd": {"until": 0.5},
                                           "batch_size": 4}},
    "searched-ce-w1-lr5-b4": {"init": "searched", "train": {"kd": CE, **W1_LR5, "batch_size": 4}},
    "searched-kd-w1-lr5-b4": {"init": "searched", "train": {**W1_LR5, "batch_size": 4}},
    "searched-kd-w1-lr5-b4-hidden": {"init": "searched",
                                     "train": {**W1_LR5, "batch_size": 4, "hidden": {"weight": 1.0}}},
    "searched-kd-w1-lr5-early-b4": {"init": "searched",
                                    "train": {**W1_LR5, "kd": {"until": 0.03}, "batch_size": 4}},
    # alpha (the weight of CE) around the default 0.5
    "searched-kd-w1-lr5-b4-a2": {"init": "searched", "train": {**W1_LR5, "batch_size": 4, "kd": {"alpha": 0.2}}},
    "searched-kd-w1-lr5-b4-a8": {"init": "searched", "train": {**W1_LR5, "batch_size": 4, "kd": {"alpha": 0.8}}},
    # KD from the teacher's top-64 log-probs, cached once per seed (`headstart cache-logits --tokens`) for
    # the first `cache` tokens the seed's runs draw, then CE: one cache serves the seed's runs at every budget
    "searched-kd-w1-lr5-b4-cache": {"init": "searched", "cache": 32_768, "train": {**W1_LR5, "batch_size": 4}},
    "searched-kd-rec": {"init": "searched", "reconstruct": True, "train": {}},
    "searched-kd-hidden": {"init": "searched", "train": {"hidden": {"weight": 1.0}}},
    "searched-kd-early": {"init": "searched", "train": {"kd": {"until": 0.05}}},
    "searched-kd-wsd": {"init": "searched", "train": {"schedule": {"name": "wsd"}}},
    "searched-kd-t2": {"init": "searched", "train": {"kd": {"temperature": 2.0}}},
}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data, default=str)


def seed_pipeline(args: argparse.Namespace, seed: int) -> Pipeline:
    """Prepare and search for ``seed`` (cached in ``OUT/seed<S>``); the pipeline holds the teacher."""
    data = yaml.safe_load(Path(args.recipe).read_text()) if args.recipe else demo_recipe()
    data.update(out=str(args.out / f"seed{seed}"), seed=seed)
    if args.evaluations:
        data["search"].setdefault("evolution", {})["evaluations"] = args.evaluations
    if args.rungs is not None:
        data["search"].setdefault("rungs", {})["count"] = args.rungs
    data.setdefault("compare", {}).update(runs=["random-ce", "searched-kd"], baseline="random-ce")
    pipe = Pipeline(load_recipe(data, where="the token-efficiency recipe"), say=lambda m: print(m, flush=True))
    pipe.run(only="search")
    return pipe


def reconstructed(pipe: Pipeline, label: str, inputs: str = "teacher") -> tuple[Path, dict[str, Any]]:
    """The searched student of ``label`` extracted with reconstructed weights (made once) from the teacher's
    or (``inputs="student"``, the extract defaults' passes) the student's own inputs; its stats."""
    from headstart.calibration import calibration_tokens
    from headstart.config import ReconstructConfig
    from headstart.extraction import build_student, export
    from headstart.reconstruct import reconstruct
    from headstart.spec import SubnetSpec

    out = pipe.out / "students" / label / ("searched-rec" if inputs == "teacher" else "searched-rec-student")
    stats_file = out.with_suffix(".json")
    if not (out.is_dir() and stats_file.is_file()):
        shutil.rmtree(out, ignore_errors=True)
        teacher, spec = pipe.teacher, SubnetSpec.load(pipe.out / "students" / label / "searched.yaml")
        tokens = calibration_tokens(str(pipe.out / "data"), teacher.tokenizer, *CALIB, seed=pipe.recipe.seed)
        student = build_student(teacher, spec)
        t0 = time.time()
        stats = reconstruct(teacher, spec, student, tokens, **ReconstructConfig(inputs=inputs).arguments())
        export(teacher, spec, out, student=student, metadata={"reconstruction": stats})
        _write_json(stats_file, {**stats, "wall_s": time.time() - t0})
    return out, json.loads(stats_file.read_text())


def teacher_cache(pipe: Pipeline, tokens: int) -> tuple[Path, float]:
    """The seed's top-k teacher cache of the windows its runs draw in their first ``tokens`` tokens
    (``OUT/seed<S>/teacher-cache-<tokens>``, built once) and the teacher FLOPs that built it."""
    from headstart.config import CacheConfig, CachePaths
    from headstart.training import cache_stage

    path, recipe = pipe.out / f"teacher-cache-{tokens}", pipe.recipe
    if not path.is_dir():
        cache_stage.run(CachePaths(teacher=recipe.teacher, data=str(pipe.out / "data"), out=str(path)),
                        CacheConfig(k=CACHE_K, seq_len=recipe.train.seq_len, tokens=tokens, seed=recipe.train.seed,
                                    dtype=recipe.train.runtime.dtype))
    windows = json.loads((path / "cache.json").read_text())["windows"]
    teacher_fpt = json.loads((pipe.out / "search" / "teacher.json").read_text())["flops_per_token"]
    return path, windows * recipe.train.seq_len * teacher_fpt


def train_config(pipe: Pipeline, args: argparse.Namespace, name: str, budget: int, student: str,
                 target: float | None, run_dir: Path) -> tuple[TrainPaths, TrainConfig]:
    """The paths and training options of run ``name``: the recipe's train section, the variant's changes, the
    budget."""
    from headstart.training.checkpoint import latest_checkpoint

    recipe = pipe.recipe
    values = merge(dataclasses.asdict(recipe.train), VARIANTS[name]["train"])
    tokens = int(round(budget * VARIANTS[name].get("horizon", 1.0)))
    steps = tokens // (values["batch_size"] * values["seq_len"])
    cache = None
    if "cache" in VARIANTS[name]:  # distil while the cache lasts
        cache = str(teacher_cache(pipe, VARIANTS[name]["cache"])[0])
        values["kd"]["until"] = min(1.0, VARIANTS[name]["cache"] / tokens)
    baseline = name == "random-ce"
    values.update(tokens=tokens)
    values["validation"].update(windows=args.val_windows, seed=0, target_loss=None if baseline or args.full else target,
                                every=max(1, steps // args.baseline_evals) if baseline else args.eval_every)
    values["checkpoint"]["every"] = max(1, steps // 10)
    paths = TrainPaths(student=student, teacher=recipe.teacher, data=str(pipe.out / "data"), out=str(run_dir),
                       teacher_cache=cache, resume=latest_checkpoint(run_dir) is not None)
    return paths, build(TrainConfig, values, where=f"run {name}")


def initial_loss(pipe: Pipeline, paths: TrainPaths, cfg: TrainConfig) -> float:
    """Validation loss of the run's starting point on its validation windows."""
    from headstart.data import fixed_windows
    from headstart.evaluation import perplexity
    from headstart.training.student import load_student

    student, _ = load_student(paths.student, pipe.teacher, cfg.seed)
    windows = fixed_windows(paths.data, "val", cfg.seq_len, cfg.validation.windows, seed=cfg.val_seed())
    return perplexity(student.eval(), windows, cfg.batch_size, dtype=cfg.runtime.dtype)["loss"]


def start_losses(pipe: Pipeline, args: argparse.Namespace) -> dict[str, Any]:
    """The untrained validation loss of each start of ``pipe``'s seed (random init, the searched
    sub-network, and the same reconstructed) and the reconstruction's calibration errors."""
    seed, label = pipe.recipe.seed, pipe.labels[0]
    spec = pipe.out / "students" / label / "searched.yaml"
    rec = {inputs: reconstructed(pipe, label, inputs) for inputs in ("teacher", "student")}
    paths, cfg = train_config(pipe, args, "random-ce", 1024 * 1024, f"random:{spec}", None, args.out / "unused")
    starts = {"random": f"random:{spec}", "searched": str(spec), "searched-rec": str(rec["teacher"][0]),
              "searched-rec-student": str(rec["student"][0])}
    losses = {name: initial_loss(pipe, dataclasses.replace(paths, student=student), cfg)
              for name, student in starts.items()}
    result = {"seed": seed, "val_tokens": cfg.validation.windows * cfg.seq_len, "initial_loss": losses,
              "reconstruction": rec["teacher"][1], "reconstruction_student": rec["student"][1]}
    print(f"[starts seed {seed}] " + json.dumps(result), flush=True)
    return result


def run_one(pipe: Pipeline, args: argparse.Namespace, budget: int, name: str,
            baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Train run ``name`` at ``budget`` (unless its result exists) and return its result."""
    from headstart.training import stage

    seed = pipe.recipe.seed
    result_file = args.out / "results" / str(budget) / f"seed{seed}" / f"{name}.json"
    if result_file.is_file():
        print(f"[{budget} seed {seed} {name}] done earlier, skipped", flush=True)
        return json.loads(result_file.read_text())
    variant, label = VARIANTS[name], pipe.labels[0]
    spec = pipe.out / "students" / label / "searched.yaml"
    setup: dict[str, float] = {}
    if variant["init"] == "searched":
        teacher_fpt = json.loads((pipe.out / "search" / "teacher.json").read_text())["flops_per_token"]
        setup = setup_costs(pipe.out, pipe.recipe, teacher_fpt, 0)
    student = f"random:{spec}" if variant["init"] == "random" else str(spec)
    if variant.get("reconstruct"):
        path, stats = reconstructed(pipe, label)
        student, setup["reconstruction"] = str(path), stats["flops"]
    if "cache" in variant:  # charged whole to every run; the summary also shares it among the seed's runs
        setup["teacher_cache"] = teacher_cache(pipe, variant["cache"])[1]
    run_dir = args.out / f"seed{seed}" / "runs" / str(budget) / name
    paths, cfg = train_config(pipe, args, name, budget, student, baseline["final_loss"] if baseline else None,
                              run_dir)
    if not paths.resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "initial.json").is_file():
        _write_json(run_dir / "initial.json", {"tokens": 0, "val_loss": initial_loss(pipe, paths, cfg)})
    print(f"[{budget} seed {seed} {name}] training ({'resuming' if paths.resume else 'fresh'})", flush=True)
    t0 = time.time()
    summary = stage.run(paths, cfg, teacher=pipe.teacher).summary
    curve = run_curve(run_dir, name, name, setup_flops=sum(setup.values()))
    result = {"run": name, "seed": seed, "budget": budget, "variant": variant, "setup_flops": setup,
              "initial_loss": curve.val_loss[0], "final_loss": curve.final_loss, "trained_tokens": summary["tokens"],
              "teacher_tokens": summary["teacher_tokens"], "tokens": curve.tokens, "flops": curve.flops,
              "val_loss": curve.val_loss, "wall_s": time.time() - t0, "target_loss": None,
              "eval_every": cfg.validation.every, "val_tokens": cfg.validation.windows * cfg.seq_len}
    if baseline is not None:
        target = baseline["final_loss"]
        tok, flops = crossing(curve.tokens, curve.val_loss, target), crossing(curve.flops, curve.val_loss, target)
        result.update(target_loss=target, tokens_to_target=tok, flops_to_target=flops,
                      token_ratio=baseline["tokens"][-1] / tok if tok else None,
                      flops_ratio=baseline["flops"][-1] / flops if flops else None)
    _write_json(result_file, result)
    print(f"[{budget} seed {seed} {name}] " + json.dumps(
        {k: result.get(k) for k in ("final_loss", "tokens_to_target", "token_ratio", "flops_ratio", "wall_s")}),
        flush=True)
    return result


def baseline_from_summary(summary: dict[str, Any], budget: int, seed: int) -> dict[str, Any] | None:
    """The random-init baseline of (``budget``, ``seed``) rebuilt from an earlier summary whose run files
    are gone: its final loss, and its tokens and FLOPs at the end (each searched run's ratio times its
    crossing), so later variants are measured against the same target; ``None`` if the summary lacks it."""
    runs = summary["results"].get(str(budget), {})
    if "random-ce" not in runs or seed not in runs["random-ce"]["seeds"]:
        return None
    row = runs["random-ce"]
    i = row["seeds"].index(seed)
    for name, other in runs.items():
        if name == "random-ce" or seed not in other["seeds"]:
            continue
        j = other["seeds"].index(seed)
        if other["token_ratio"][j] and other["flops_ratio"][j]:
            tokens = other["token_ratio"][j] * other["tokens_to_target"][j]
            flops = other["flops_ratio"][j] * other["flops_to_target"][j]
            return {"run": "random-ce", "seed": seed, "budget": budget, "variant": VARIANTS["random-ce"],
                    "setup_flops": {}, "initial_loss": row["initial_loss"][i], "final_loss": row["final_loss"][i],
                    "tokens": [0, round(tokens)], "flops": [0.0, flops],
                    "val_loss": [row["initial_loss"][i], row["final_loss"][i]], "target_loss": None,
                    "eval_every": row["eval_every"][i], "rebuilt_from_summary": True}
    return None


def _stats(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    return {"mean": statistics.fmean(got) if got else None,
            "min": min(got) if got else None, "max": max(got) if got else None,
            "std": statistics.stdev(got) if len(got) > 1 else None, "not_reached": len(values) - len(got)}


def scaling_fit(points: list[tuple[int, float]], at: tuple[int, ...] = (1_000_000, 10_000_000)) -> dict[str, Any]:
    """Least-squares fit of ``log(ratio) = a + b log(budget)`` over (budget, ratio) points: the power
    law the saving follows as the budget grows, and what it predicts at the budgets ``at``."""
    pts = [(math.log(b), math.log(r)) for b, r in points if r]
    if len({x for x, _ in pts}) < 2:
        return {"points": len(pts), "exponent": None, "predicted": {}}
    mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    a = my - b * mx
    resid = [y - a - b * x for x, y in pts]
    return {"points": len(pts), "exponent": b,
            "rms_log_residual": math.sqrt(statistics.fmean(r * r for r in resid)),
            "predicted": {str(n): math.exp(a + b * math.log(n)) for n in at}}


def plot_budgets(summary: dict[str, Any], path: Path) -> Path | None:
    """Token and FLOPs ratio against budget (mean and min-max over seeds) as a PNG; ``None`` without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    names = sorted({r for runs in summary["results"].values() for r in runs if r != "random-ce"})
    colors = plt.get_cmap("tab20").colors
    for ax, key in zip(axes, ("token_ratio", "flops_ratio"), strict=True):
        for i, run in enumerate(names):
            shift = 1.025 ** (i - (len(names) - 1) / 2)  # side by side at each budget (log x axis)
            budgets = [b for b in summary["budgets"] if run in summary["results"][str(b)]]
            stats = [summary["results"][str(b)][run][f"{key}_stats"] for b in budgets]
            keep = [(b, s) for b, s in zip(budgets, stats, strict=True) if s["mean"] is not None]
            if not keep:
                continue
            xs, ss = [b * shift for b, _ in keep], [s for _, s in keep]
            ax.errorbar(xs, [s["mean"] for s in ss], yerr=[[s["mean"] - s["min"] for s in ss],
                        [s["max"] - s["mean"] for s in ss]], marker="o", capsize=3, label=run,
                        color=colors[i % len(colors)])
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="training budget (tokens)", ylabel=key.replace("_", " ") + " vs random init",
               title=key.replace("_", " "))
        ax.set_xticks(summary["budgets"], [f"{b / 1e6:g}M" if b >= 1e6 else f"{b / 1e3:g}k"
                                           for b in summary["budgets"]])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _amortised(result: dict[str, Any], readers: int) -> float | None:
    """FLOPs ratio of a cached run when its cache's teacher FLOPs are shared by ``readers`` runs."""
    if not result.get("flops_to_target"):
        return None
    baseline = result["flops_ratio"] * result["flops_to_target"]
    return baseline / (result["flops_to_target"] - result["setup_flops"]["teacher_cache"] * (1 - 1 / readers))


def summarize(args: argparse.Namespace) -> dict[str, Any]:
    """Every finished run's result under ``OUT/results``, as per-seed lists per budget and run."""
    results: dict[str, dict[str, Any]] = {}
    seeds: set[int] = set()
    found = [json.loads(path.read_text()) for path in sorted((args.out / "results").glob("*/seed*/*.json"))]
    readers = collections.Counter((r["seed"], r["variant"]["cache"]) for r in found if "cache" in r.get("variant", {}))
    for r in found:
        seeds.add(r["seed"])
        row = results.setdefault(str(r["budget"]), {}).setdefault(r["run"], {
            "seeds": [], "token_ratio": [], "flops_ratio": [], "tokens_to_target": [], "flops_to_target": [],
            "final_loss": [], "initial_loss": [], "setup_flops": [], "eval_every": []})
        row["seeds"].append(r["seed"])
        for key in ("token_ratio", "flops_ratio", "tokens_to_target", "flops_to_target", "final_loss",
                    "initial_loss"):
            row[key].append(r.get(key, 1.0 if r["run"] == "random-ce" and key.endswith("ratio") else None))
        row["setup_flops"].append(r["setup_flops"])
        row["eval_every"].append(r.get("eval_every"))
        if "cache" in r.get("variant", {}):  # the cache's teacher FLOPs shared by the seed's runs that read it
            shared = readers[r["seed"], r["variant"]["cache"]]
            row.setdefault("cache_readers", []).append(shared)
            row.setdefault("flops_ratio_amortised", []).append(_amortised(r, shared))
    for runs in results.values():
        for row in runs.values():
            for key in ("token_ratio", "flops_ratio", "flops_ratio_amortised"):
                if key in row:
                    row[f"{key}_stats"] = _stats(row[key])
    if getattr(args, "merge", None):  # an earlier summary's runs that these run files don't cover
        earlier = json.loads(args.merge.read_text())
        for budget, runs in earlier["results"].items():
            for name, row in runs.items():
                if name not in results.setdefault(budget, {}):
                    results[budget][name] = row
                    seeds.update(row["seeds"])
    budgets = sorted(int(b) for b in results)
    fits = {run: {key: scaling_fit([(int(b), v) for b, runs in results.items() if run in runs
                                    for v in runs[run][key]]) for key in ("token_ratio", "flops_ratio")}
            for run in sorted({r for runs in results.values() for r in runs if r != "random-ce"})}
    return {"seeds": sorted(seeds), "val_tokens": args.val_windows * 128, "budgets": budgets, "results": results,
            "scaling_fit": fits,
            "setup": {"recipe": "the embedded demo recipe" if not args.recipe else Path(args.recipe).name,
                      "val_windows": args.val_windows,
                      "baseline_evals": args.baseline_evals, "early_stop": not args.full,
                      "evaluations": args.evaluations, "rungs": args.rungs, "calibration": list(CALIB),
                      "variants": VARIANTS,
                      "cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
            "paper_token_ratio": PAPER_TOKEN_RATIO}


def plot_seed_curves(out: Path, json_path: Path) -> list[Path]:
    """Per budget in ``OUT``'s run files, the validation curves of its lowest seed against training
    tokens, the target marked, as ``<json stem>_<budget>_seed<S>.png`` beside ``json_path``; the x axis
    ends at 1.5x the longest searched run (the baseline runs on past it to the target)."""
    written = []
    for budget_dir in sorted((out / "results").glob("*/"), key=lambda d: int(d.name)):
        seed_dir = min(budget_dir.glob("seed*/"), key=lambda d: int(d.name[4:]), default=None)
        files = [f for f in seed_dir.glob("*.json") if f.stem in VARIANTS] if seed_dir else []
        results = [json.loads(f.read_text()) for f in sorted(files, key=lambda f: list(VARIANTS).index(f.stem))]
        results = [r for r in results if not r.get("rebuilt_from_summary")]  # only its end point is known
        if not results:
            continue
        curves = [RunCurve(r["run"], r["run"], r["tokens"], r["flops"], r["val_loss"]) for r in results]
        target = next((r["target_loss"] for r in results if r.get("target_loss") is not None), None)
        path = json_path.with_name(f"{json_path.stem}_{budget_dir.name}_{seed_dir.name}.png")
        searched = [t for c in curves if c.name != "random-ce" for t in c.tokens]
        xmax = 1.5 * max(searched) if searched else None
        if plot_curves(curves, path, target=target, xmax=xmax) is not None:
            written.append(path)
    return written


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table: per budget and run, the baseline's final loss, and the token and
    FLOPs ratios as mean ± sd (min-max) over seeds."""
    def cell(stats: dict[str, Any]) -> str:
        if stats["mean"] is None:
            return "not reached"
        sd = f" ± {stats['std']:.1f}" if stats["std"] is not None else ""
        missed = f", {stats['not_reached']} not reached" if stats["not_reached"] else ""
        return f"{stats['mean']:.1f}×{sd} ({stats['min']:.1f}–{stats['max']:.1f}{missed})"

    lines = ["| budget | run | seeds | random init's final loss | token ratio | FLOPs ratio |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for budget in summary["budgets"]:
        runs = summary["results"][str(budget)]
        target = statistics.fmean(runs["random-ce"]["final_loss"]) if "random-ce" in runs else float("nan")
        for name in sorted(runs, key=list(VARIANTS).index):
            row = runs[name]
            if name != "random-ce":
                shared = ""
                if "cache_readers" in row:
                    lo, hi = min(row["cache_readers"]), max(row["cache_readers"])
                    shared = (f"; the cache shared by {lo if lo == hi else f'{lo}–{hi}'} runs: "
                              f"{cell(row['flops_ratio_amortised_stats'])}")
                lines.append(f"| {budget:,} | {name} | {len(row['seeds'])} | {target:.3f} | "
                             f"{cell(row['token_ratio_stats'])} | {cell(row['flops_ratio_stats'])}{shared} |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def main() -> None:
    """Run what is missing, then write the summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=_ints, default=[250_000], help="training tokens per run, comma-separated")
    p.add_argument("--seeds", type=_ints, default=[0], help="seeds, comma-separated")
    p.add_argument("--runs", default="searched-ce,searched-kd",
                   help=f"runs besides the random-init baseline, comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--recipe", help="recipe YAML to start from (default: the embedded demo recipe)")
    p.add_argument("--evaluations", type=int, help="search evaluations (default: the recipe's)")
    p.add_argument("--rungs", type=int, help="training-aware search rungs (default: the recipe's; their FLOPs "
                   "are charged to the searched runs)")
    p.add_argument("--val-windows", type=int, default=128, help="fixed val windows of 128 tokens (%(default)s)")
    p.add_argument("--eval-every", type=int, default=4, help="steps between validations of the non-baseline runs")
    p.add_argument("--baseline-evals", type=int, default=8, help="validations over the baseline's budget")
    p.add_argument("--full", action="store_true", help="train every run for the whole budget (no early stop)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "token_efficiency")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "token_efficiency.json")
    p.add_argument("--summarize", action="store_true", help="only write the summary of the finished runs")
    p.add_argument("--merge", type=Path, help="an earlier summary JSON whose runs missing from OUT's run "
                   "files are kept in the summary (and its fit); baselines missing from OUT are rebuilt from it")
    p.add_argument("--starts", type=Path, help="only measure each seed's untrained starts (random, searched, "
                   "reconstructed) and write them to this JSON")
    args = p.parse_args()
    runs = ["random-ce", *[r for r in args.runs.split(",") if r and r != "random-ce"]]
    unknown = [r for r in runs if r not in VARIANTS]
    if unknown:
        p.error(f"unknown run {unknown[0]!r}; runs: {', '.join(VARIANTS)}")
    if args.starts:
        _write_json(args.starts, {"calibration": list(CALIB),
                                  "seeds": [start_losses(seed_pipeline(args, seed), args) for seed in args.seeds]})
        return
    if not args.summarize:
        earlier = json.loads(args.merge.read_text()) if args.merge else None
        for seed in args.seeds:
            pipe = seed_pipeline(args, seed)
            for budget in args.budgets:
                rebuilt = baseline_from_summary(earlier, budget, seed) if earlier else None
                baseline_file = args.out / "results" / str(budget) / f"seed{seed}" / "random-ce.json"
                if rebuilt and not baseline_file.is_file():
                    _write_json(baseline_file, rebuilt)
                baseline = run_one(pipe, args, budget, "random-ce", None)
                for name in runs[1:]:
                    run_one(pipe, args, budget, name, baseline)
                _write_json(args.json, summarize(args))
    summary = summarize(args)
    _write_json(args.json, summary)
    plot_budgets(summary, args.json.with_suffix(".png"))
    plot_seed_curves(args.out, args.json)
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
