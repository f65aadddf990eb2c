"""bench/token_efficiency.py's summary: per-seed ratios per budget and run, their spread, the scaling fit."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "token_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("token_efficiency", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_fit_recovers_a_power_law(bench):
    # ratio = 3 * (budget / 1e5) ** 0.4, one point per (budget, seed), a None (not reached) ignored
    points = [(b, 3 * (b / 1e5) ** 0.4) for b in (125_000, 250_000, 500_000) for _ in range(3)] + [(500_000, None)]
    fit = bench.scaling_fit(points)
    assert fit["points"] == 9
    assert fit["exponent"] == pytest.approx(0.4)
    assert fit["rms_log_residual"] == pytest.approx(0.0, abs=1e-9)
    assert fit["predicted"]["1000000"] == pytest.approx(3 * 10**0.4)
    assert bench.scaling_fit([(250_000, 2.0), (250_000, 3.0)])["exponent"] is None  # one budget: no slope


def _result(out: Path, budget: int, seed: int, run: str, ratio: float | None) -> None:
    path = out / "results" / str(budget) / f"seed{seed}" / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    r = {"run": run, "seed": seed, "budget": budget, "setup_flops": {"search": 1.0}, "initial_loss": 8.0,
         "final_loss": 4.0}
    if run != "random-ce":
        r.update(token_ratio=ratio, flops_ratio=ratio and ratio / 2, tokens_to_target=ratio and budget / ratio)
    path.write_text(json.dumps(r))


def test_summary_lists_per_seed_ratios_with_spread_and_fit(bench, tmp_path):
    for budget in (125_000, 250_000):
        for seed in (0, 1, 2):
            _result(tmp_path, budget, seed, "random-ce", None)
            _result(tmp_path, budget, seed, "searched-kd", None if (budget, seed) == (250_000, 2) else
                    (seed + 4.0) * budget / 125_000)
    args = argparse.Namespace(out=tmp_path, val_windows=128, recipe=None, eval_every=4, baseline_evals=8,
                              full=False, evaluations=None, rungs=0)
    summary = bench.summarize(args)
    assert summary["seeds"] == [0, 1, 2] and summary["budgets"] == [125_000, 250_000]
    assert summary["val_tokens"] == 16_384
    row = summary["results"]["250000"]["searched-kd"]
    assert row["seeds"] == [0, 1, 2] and row["token_ratio"] == [8.0, 10.0, None]
    stats = row["token_ratio_stats"]
    assert (stats["mean"], stats["min"], stats["max"], stats["not_reached"]) == (9.0, 8.0, 10.0, 1)
    assert stats["std"] == pytest.approx(math.sqrt(2))
    assert summary["results"]["125000"]["random-ce"]["token_ratio"] == [1.0, 1.0, 1.0]
    fit = summary["scaling_fit"]["searched-kd"]["token_ratio"]
    # the seeds that reached the target: 4, 5, 6 at 125k; 8, 10 at 250k (seed 2 did not), fit in log-log
    slope, _ = np.polyfit(np.log([125e3] * 3 + [250e3] * 2), np.log([4.0, 5.0, 6.0, 8.0, 10.0]), 1)
    assert fit["points"] == 5 and fit["exponent"] == pytest.approx(slope)
    assert "random-ce" not in summary["scaling_fit"]
    if importlib.util.find_spec("matplotlib") is not None:
        png = bench.plot_budgets(summary, tmp_path / "budgets.png")
        assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    table = bench.markdown_table(summary).splitlines()
    assert len(table) == 2 + 2  # header, rule, one row per budget
    assert table[-1] == ("| 250,000 | searched-kd | 3 | 4.000 | 9.0× ± 1.4 (8.0–10.0, 1 not reached) | "
                         "4.5× ± 0.7 (4.0–5.0, 1 not reached) |")


def test_a_cached_runs_teacher_flops_are_shared_among_its_seeds_readers(bench, tmp_path):
    """The cache's FLOPs are charged whole to each run (flops_ratio) and, separately, split among the runs
    of that seed that read it (flops_ratio_amortised)."""
    name = "searched-kd-w1-lr5-b4-cache"
    for budget, seed in ((250_000, 0), (1_000_000, 0), (1_000_000, 1)):
        path = tmp_path / "results" / str(budget) / f"seed{seed}" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # the baseline spent 120 FLOPs; the run 60 to its crossing, 40 of them the cache's teacher forward
        path.write_text(json.dumps({"run": name, "seed": seed, "budget": budget, "variant": bench.VARIANTS[name],
                                    "setup_flops": {"search": 5.0, "teacher_cache": 40.0}, "initial_loss": 8.0,
                                    "final_loss": 4.0, "token_ratio": 20.0, "flops_ratio": 2.0,
                                    "tokens_to_target": budget / 20, "flops_to_target": 60.0}))
    args = argparse.Namespace(out=tmp_path, val_windows=128, recipe=None, eval_every=4, baseline_evals=8,
                              full=False, evaluations=None, rungs=0)
    summary = bench.summarize(args)
    row = summary["results"]["1000000"][name]
    assert row["flops_ratio"] == [2.0, 2.0] and row["cache_readers"] == [2, 1]
    assert row["flops_ratio_amortised"] == [pytest.approx(120 / 40), pytest.approx(2.0)]  # 60 - 40/2; all 60
    assert summary["results"]["250000"][name]["cache_readers"] == [2]
    assert "the cache shared by 1–2 runs: 2.5×" in bench.markdown_table(summary)


def test_merge_keeps_an_earlier_summarys_budgets_and_fits_over_all(bench, tmp_path):
    earlier_out, out = tmp_path / "earlier", tmp_path / "now"
    for seed in (0, 1, 2):
        for budget, where in ((125_000, earlier_out), (250_000, earlier_out), (250_000, out), (1_000_000, out)):
            _result(where, budget, seed, "random-ce", None)
            _result(where, budget, seed, "searched-ce", 4.0 * (budget / 125_000) ** 0.5 * (1 if where is out else 9))
    args = argparse.Namespace(out=earlier_out, val_windows=128, recipe=None, eval_every=4, baseline_evals=8,
                              full=False, evaluations=None, rungs=0)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(bench.summarize(args)))
    summary = bench.summarize(argparse.Namespace(**{**vars(args), "out": out, "merge": earlier}))
    assert summary["budgets"] == [125_000, 250_000, 1_000_000] and summary["seeds"] == [0, 1, 2]
    runs = summary["results"]
    assert runs["125000"]["searched-ce"]["token_ratio"] == [36.0, 36.0, 36.0]  # kept from the earlier summary
    assert runs["250000"]["searched-ce"]["token_ratio"] == [pytest.approx(4.0 * 2**0.5)] * 3  # the new run files win
    fit = summary["scaling_fit"]["searched-ce"]["token_ratio"]
    slope, _ = np.polyfit(np.log([125e3] * 3 + [250e3] * 3 + [1e6] * 3),
                          np.log([36.0] * 3 + [4.0 * 2**0.5] * 3 + [4.0 * 8**0.5] * 3), 1)
    assert fit["points"] == 9 and fit["exponent"] == pytest.approx(slope)


def test_seed_curves_plot_the_lowest_seed_of_each_budget(bench, tmp_path):
    pytest.importorskip("matplotlib")
    for seed in (1, 2):
        for run, loss in (("random-ce", [10.0, 6.0, 4.0]), ("searched-ce", [8.0, 5.0, 3.5])):
            path = tmp_path / "results" / "250000" / f"seed{seed}" / f"{run}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"run": run, "tokens": [0, 1e5, 2.5e5], "flops": [0, 1e12, 2.5e12],
                                        "val_loss": loss, "target_loss": None if run == "random-ce" else 4.0}))
    written = bench.plot_seed_curves(tmp_path, tmp_path / "te.json")
    assert written == [tmp_path / "te_250000_seed1.png"] and written[0].read_bytes()[:4] == b"\x89PNG"


def test_merge_keeps_an_earlier_summarys_runs_that_the_run_files_lack(bench, tmp_path):
    earlier_out, out = tmp_path / "earlier", tmp_path / "now"
    for seed in (0, 1):
        _result(earlier_out, 1_000_000, seed, "random-ce", None)
        _result(earlier_out, 1_000_000, seed, "searched-ce", 10.0 + seed)
        _result(out, 1_000_000, seed, "random-ce", None)
        _result(out, 1_000_000, seed, "searched-kd-early-h16", 20.0 + seed)
    args = argparse.Namespace(out=earlier_out, val_windows=128, recipe=None, eval_every=4, baseline_evals=8,
                              full=False, evaluations=None, rungs=0)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(bench.summarize(args)))
    runs = bench.summarize(argparse.Namespace(**{**vars(args), "out": out, "merge": earlier}))["results"]["1000000"]
    assert runs["searched-ce"]["token_ratio"] == [10.0, 11.0]  # kept: the new run files lack it
    assert runs["searched-kd-early-h16"]["token_ratio"] == [20.0, 21.0]


def test_a_baseline_is_rebuilt_from_an_earlier_summary(bench):
    row = {"seeds": [0, 2], "final_loss": [4.6, 4.5], "initial_loss": [10.9, 10.8], "eval_every": [122, 122]}
    summary = {"results": {"1000000": {
        "random-ce": row,
        "searched-ce": {"seeds": [2], "token_ratio": [None], "flops_ratio": [None], "tokens_to_target": [None],
                        "flops_to_target": [None]},
        "searched-kd": {"seeds": [0, 2], "token_ratio": [20.0, 16.0], "flops_ratio": [10.0, 8.0],
                        "tokens_to_target": [50_000.0, 62_500.0], "flops_to_target": [3e13, 4e13]}}}}
    rebuilt = bench.baseline_from_summary(summary, 1_000_000, 2)
    assert rebuilt["final_loss"] == 4.5 and rebuilt["tokens"][-1] == 1_000_000
    assert rebuilt["flops"][-1] == pytest.approx(3.2e14) and rebuilt["rebuilt_from_summary"]
    assert bench.baseline_from_summary(summary, 1_000_000, 1) is None  # no baseline for that seed
    assert bench.baseline_from_summary(summary, 500_000, 0) is None


def test_a_horizon_variant_spans_its_fraction_of_the_budget(bench, tmp_path):
    from types import SimpleNamespace

    from headstart.config import TrainConfig

    (tmp_path / "data").mkdir()
    (tmp_path / "spec.yaml").write_text("{}\n")
    train = TrainConfig(batch_size=8, seq_len=128, optim={"lr": 1e-3})
    pipe = SimpleNamespace(recipe=SimpleNamespace(train=train, teacher="t"), out=tmp_path)
    args = argparse.Namespace(val_windows=128, baseline_evals=8, eval_every=8, full=False)
    paths, cfg = bench.train_config(pipe, args, "searched-kd-early-h16", 1_000_000, str(tmp_path / "spec.yaml"), 4.6,
                                    tmp_path / "run")
    assert cfg.tokens == 62_500 and cfg.kd.until == 0.5 and cfg.optim.lr == 5e-4
    assert cfg.validation.target_loss == 4.6 and cfg.schedule.warmup == 10 and cfg.kd.kind == "forward"
    assert (paths.student, paths.data, paths.out, paths.resume) == (
        str(tmp_path / "spec.yaml"), str(tmp_path / "data"), str(tmp_path / "run"), False)
    paths, cfg = bench.train_config(pipe, args, "random-ce", 1_000_000, "random:r", None, tmp_path / "b")
    assert cfg.tokens == 1_000_000 and cfg.kd.kind == "none" and cfg.validation.target_loss is None
    assert cfg.validation.every == 1_000_000 // (8 * 128) // 8  # the baseline validates baseline_evals times
