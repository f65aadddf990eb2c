"""bench/gpu_step.py runs headstart's real KD train step at its tiny size and writes coherent JSON."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_step.py"


def test_gpu_step_bench_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu_step.json"
    bench.main(["--sizes", "tiny", "--compile", "off", "--steps", "2", "--warmup", "1", "--dtype", "float32",
                "--out", str(out)])
    got = json.loads(out.read_text())
    assert got["dtype"] == "float32" and got["measured_matmul_peak_flops"] > 0
    (run,) = got["runs"]
    assert run["size"] == "tiny" and run["compile"] is False
    # the analytic FLOPs of a step: 3x the student's forward and the teacher's forward, per token
    tokens = run["batch_size"] * run["seq_len"]
    assert run["flops_per_step"] == (3 * run["student_flops_per_token"] + run["teacher_flops_per_token"]) * tokens
    assert run["student_flops_per_token"] >= 2 * (run["student_params"] - 2048 * 64)  # every matrix but the lookup
    assert run["tokens_per_s"] == pytest.approx(tokens / run["step_s"])
    assert run["mfu_measured_peak"] == pytest.approx(run["flops_per_step"] / run["step_s"]
                                                     / got["measured_matmul_peak_flops"])
    assert math.isfinite(run["final_loss"]) and run["final_loss"] > 0
    assert "MFU" in capsys.readouterr().out
