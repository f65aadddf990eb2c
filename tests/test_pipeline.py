"""``headstart run`` end to end on a tiny teacher and the small corpus shipped in tests/data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from headstart.cli import main
from headstart.errors import ConfigError
from headstart.recipe import Recipe
from headstart.stages import Pipeline

CORPUS = Path(__file__).parent / "data" / "corpus"


def _recipe(teacher: Path, out: Path) -> dict:
    return {
        "teacher": str(teacher), "out": str(out), "seed": 0,
        "data": {"inputs": [str(CORPUS)], "search_frac": 1, "val_frac": 1, "workers": 1},
        "search": {"params": "110K", "tolerance": 0.25, "evaluations": 6, "population": 4, "windows": 4,
                   "seq_len": 32, "batch_size": 4, "calibration_windows": 4},
        "train": {"tokens": 2048, "seq_len": 32, "batch_size": 4, "lr": 3e-3, "eval_every": 4, "eval_windows": 4,
                  "save_every": 4, "progress": False},
        "eval": {"windows": 4, "seq_len": 32, "max_new_tokens": 4},
    }


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_every_stage_then_skip_then_recompute(tiny_teacher_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    recipe = _write(tmp_path, _recipe(tiny_teacher_dirs["smollm2"], out))
    assert main(["run", "--config", str(recipe)]) == 0
    for path in ["recipe.yaml", "data/manifest.json", "search/summary.json", "search/journal.jsonl",
                 "search/search.png", "students/searched.yaml", "students/first-k.yaml",
                 "report/report.md", "report/loss_vs_tokens.png", "report/loss_vs_flops.png", "report/summary.json"]:
        assert (out / path).is_file(), path
    for run in ("random-ce", "first-k-kd", "searched-ce", "searched-kd"):
        assert (out / "runs" / run / "student" / "config.json").is_file()
        ev = json.loads((out / "eval" / f"{run}.json").read_text())
        assert math.isfinite(ev["loss"]) and ev["params"] > 0
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [r["run"] for r in summary["rows"]] == ["random-ce", "first-k-kd", "searched-ce", "searched-kd"]
    assert summary["setup_flops"]["importance"] > 0 and summary["setup_flops"]["search"] > 0
    report = (out / "report" / "report.md").read_text()
    assert "| random init, CE |" in report and "searched sub-network, KD" in report
    capsys.readouterr()

    assert main(["run", "--config", str(recipe)]) == 0  # everything is done: every stage is skipped
    said = capsys.readouterr().out
    assert said.count("skipped") >= 1 + 1 + 4 + 4 and "training" not in said

    import shutil

    shutil.rmtree(out / "data")  # inputs of later stages deleted: recomputed, later stages still valid
    assert main(["run", "--config", str(recipe)]) == 0
    said = capsys.readouterr().out
    assert "[prepare] outputs missing" in said and "[search] done earlier, skipped" in said


def test_interrupted_training_resumes(tiny_teacher_dirs, tmp_path, monkeypatch):
    from headstart.train import loop

    out = tmp_path / "out"
    recipe = Recipe.from_dict(_recipe(tiny_teacher_dirs["llama"], out))
    original = loop.Trainer._should_stop
    monkeypatch.setattr(loop.Trainer, "_should_stop", lambda self: self.counters.step == 6 or original(self))
    with pytest.raises(KeyboardInterrupt):
        Pipeline(recipe, say=lambda _: None).run()
    assert not (out / "runs" / "random-ce" / "student").exists()
    monkeypatch.setattr(loop.Trainer, "_should_stop", original)
    said: list[str] = []
    Pipeline(recipe, say=said.append).run()
    assert any("[train:random-ce] resuming" in s for s in said)
    metrics = (out / "runs" / "random-ce" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in metrics]
    assert steps[-1] == 2048 // (32 * 4) and sorted(set(steps)) == sorted(steps)


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'search.evaluatons'.*did you mean 'search.evaluations'"):
        Recipe.from_dict({"search": {"params": "1M", "evaluatons": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*did you mean 'train'"):
        Recipe.from_dict({"trian": {}, "search": {"params": "1M"}})
    with pytest.raises(ConfigError, match="unknown run 'random'"):
        Recipe.from_dict({"search": {"params": "1M"}, "compare": {"runs": ["random"]}})
    with pytest.raises(ConfigError, match="needs search.params"):
        Recipe.from_dict({})
