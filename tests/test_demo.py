"""``headstart demo`` on the real teacher and corpus, with a reduced budget (slow; CI runs it)."""

from __future__ import annotations

import json
import math
import re

import pytest

from headstart.cli import main
from headstart.config.recipe import DEFAULT_RUNS as RUNS

pytestmark = pytest.mark.slow


def test_demo_with_a_reduced_budget_reports_finite_numbers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADSTART_NO_REEXEC", "1")
    out = tmp_path / "demo"
    # the demo's every stage, each as small as it goes (rungs: tests/test_search_cli.py), so the suite stays short
    assert main(["demo", "--out", str(out), "--search.evolution.evaluations", "3", "--search.fitness.windows", "4",
                 "--search.rungs.count", "0", "--train.tokens", "1024", "--train.batch-size", "4",
                 "--train.validation.windows", "4", "--eval.windows", "4", "--eval.max-new-tokens", "8",
                 "--no-progress"]) == 0
    report = out / "report"
    printed = capsys.readouterr().out
    assert f"report: {report / 'report.md'}" in printed
    lines = printed[printed.index("report: "):].splitlines()
    assert len(lines) == 3 + len(RUNS) and lines[1].startswith("bin0-50M: target")  # the report, the runs, the teacher
    assert "teacher (reference)" in lines[-1]

    (budget,) = json.loads((report / "summary.json").read_text())["budgets"]
    rows = {r["run"]: r for r in budget["rows"]}
    teacher = rows.pop("teacher")
    assert set(rows) == set(RUNS) and teacher["params"] > 100e6 and math.isfinite(teacher["final_loss"])
    for row in rows.values():
        assert math.isfinite(row["final_loss"]) and math.isfinite(row["final_ppl"]), row
        assert 40e6 < row["params"] < 60e6, row  # the demo's 50M budget, +-10%
        for key in ("tokens_to_target", "flops_to_target", "token_ratio", "flops_ratio"):
            assert row[key] is None or (math.isfinite(row[key]) and row[key] >= 0), (key, row)
        # a sub-network may start below the baseline's short-run target: zero tokens, said so, no ratio
        assert row["reached_at_start"] == (row["tokens_to_target"] == 0.0)
        assert row["token_ratio"] is None or not row["reached_at_start"]
    assert rows["random-ce"]["token_ratio"] == 1.0 and math.isfinite(budget["target_loss"])
    assert budget["setup_flops"]["importance"] > 0 and budget["setup_flops"]["search"] > 0

    text = (report / "report.md").read_text()
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE)
    for png in ("bin0-50M/loss_vs_tokens.png", "bin0-50M/loss_vs_flops.png", "search.png"):
        assert (report / png).stat().st_size > 1000, png
    for name in RUNS:
        evaluation = json.loads((out / "eval" / "bin0-50M" / f"{name}.json").read_text())
        assert math.isfinite(evaluation["loss"]) and evaluation["samples"]
