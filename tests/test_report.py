"""Tokens/FLOPs-to-target arithmetic and the report's table and plot."""

from __future__ import annotations

import pytest

from headstart.report import RunCurve, comparison_rows, crossing, markdown_table, plot_curves


def test_crossing_interpolates_and_reports_never():
    assert crossing([0, 10, 20], [5.0, 4.0, 3.0], 3.5) == pytest.approx(15.0)
    assert crossing([0, 10, 20], [5.0, 4.0, 3.0], 6.0) == 0
    assert crossing([0, 10, 20], [5.0, 4.0, 3.0], 2.0) is None


def test_rows_count_setup_flops_and_never_divide_by_zero(tmp_path):
    base = RunCurve("random-ce", "random init, CE", [0, 100, 200], [0, 1e3, 2e3], [10.0, 6.0, 5.0], params=10)
    fast = RunCurve("searched-kd", "searched, KD", [0, 100, 200], [0, 2e3, 4e3], [6.0, 5.0, 4.0],
                    setup_flops=500.0, params=10)
    slow = RunCurve("first-k-kd", "first-k, KD", [0, 100, 200], [0, 2e3, 4e3], [12.0, 9.0, 8.0], params=10)
    ready = RunCurve("searched-ce", "searched, CE", [0, 100], [0, 1e3], [4.5, 4.0], setup_flops=500.0, params=10)
    rows = {r["run"]: r for r in comparison_rows([base, fast, slow, ready], baseline="random-ce")}
    assert rows["random-ce"]["token_ratio"] == pytest.approx(1.0)
    assert rows["searched-kd"]["tokens_to_target"] == pytest.approx(100.0)
    assert rows["searched-kd"]["token_ratio"] == pytest.approx(2.0)
    # FLOPs to target include the 500 setup FLOPs: 500 + 2e3 at 100 tokens
    assert rows["searched-kd"]["flops_to_target"] == pytest.approx(2500.0)
    assert rows["searched-kd"]["flops_ratio"] == pytest.approx(2e3 / 2500.0)
    assert rows["first-k-kd"]["tokens_to_target"] is None and rows["first-k-kd"]["token_ratio"] is None
    # a run already at the target before its first step: zero tokens, no finite ratio, and said so
    assert rows["searched-ce"]["tokens_to_target"] == 0.0 and rows["searched-ce"]["token_ratio"] is None
    assert rows["searched-ce"]["reached_at_start"] and rows["searched-ce"]["flops_ratio"] == pytest.approx(4.0)
    table = markdown_table(list(rows.values()))
    assert "not reached" in table and "2.00×" in table and "at the target before training" in table
    png = plot_curves([base, fast, slow], tmp_path / "curves.png", target=5.0)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no run named"):
        comparison_rows([fast], baseline="random-ce")
