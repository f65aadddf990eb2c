"""``headstart run`` end to end on a tiny teacher and the small corpus shipped in tests/data."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import yaml

from headstart.cli import main
from headstart.config import load_recipe
from headstart.config.recipe import INHERITED_BATCH
from headstart.config.train import INHERITED
from headstart.errors import ConfigError, Interrupted
from headstart.pipeline import Pipeline
from headstart.report import run_curve

CORPUS = Path(__file__).parent / "data" / "corpus"


def _recipe(teacher: Path, out: Path) -> dict:
    return {
        "teacher": str(teacher), "out": str(out), "seed": 0,
        "corpus": [str(CORPUS)], "prepare": {"search_frac": 1, "val_frac": 1, "workers": 1},
        "search": {"params": "110K", "tolerance": 0.25, "seq_len": 32, "batch_size": 4,
                   "evolution": {"evaluations": 6, "population": 4},
                   "fitness": {"windows": 4, "calibration_windows": 4},
                   "rungs": {"count": 2, "candidates": 2, "tokens": 256}},
        "train": {"tokens": 2048, "seq_len": 32, "batch_size": 4, "optim": {"lr": 3e-3},
                  "validation": {"every": 4, "windows": 4}, "checkpoint": {"every": 4}},
        "eval": {"windows": 4, "seq_len": 32, "max_new_tokens": 4},
    }


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


LABEL = "bin0-110k"


def test_run_every_stage_then_skip_then_recompute(tiny_teacher_dirs, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    recipe = _write(tmp_path, _recipe(tiny_teacher_dirs["smollm2"], out))
    assert main(["run", "--config", str(recipe), "--no-progress"]) == 0
    for path in ["recipe.yaml", "data/manifest.json", "search/summary.json", "search/journal.jsonl",
                 "search/search.png", f"students/{LABEL}/searched.yaml", f"students/{LABEL}/first-k.yaml",
                 "report/report.md", f"report/{LABEL}/loss_vs_tokens.png", f"report/{LABEL}/loss_vs_flops.png",
                 "report/summary.json"]:
        assert (out / path).is_file(), path
    for run in ("random-ce", "first-k-kd", "searched-ce", "searched-kd"):
        assert (out / "runs" / LABEL / run / "student" / "config.json").is_file()
        ev = json.loads((out / "eval" / LABEL / f"{run}.json").read_text())
        assert math.isfinite(ev["loss"]) and ev["params"] > 0
    (budget,) = json.loads((out / "report" / "summary.json").read_text())["budgets"]
    assert [r["run"] for r in budget["rows"]] == ["random-ce", "first-k-kd", "searched-ce", "searched-kd", "teacher"]
    assert budget["setup_flops"]["importance"] > 0 and budget["setup_flops"]["search"] > 0
    assert budget["setup_flops"]["rungs"] > 0  # the recipe's own rungs: the setup share leaves them as set
    saved = yaml.safe_load((out / "recipe.yaml").read_text())["search"]  # what ran, the plan's choices filled in
    assert saved["rungs"] == {**saved["rungs"], "count": 2, "tokens": 256, "candidates": 2}
    report = (out / "report" / "report.md").read_text()
    assert "| random init, CE |" in report and "searched sub-network, KD" in report
    assert load_recipe(yaml.safe_load((out / "recipe.yaml").read_text())).out == str(out)  # saved recipe reloads
    caplog.clear()

    assert main(["run", "--config", str(recipe)]) == 0  # everything is done: every stage is skipped
    said = caplog.text
    assert said.count("skipped") >= 1 + 1 + 4 + 4 and "training" not in said
    caplog.clear()

    import shutil

    shutil.rmtree(out / "data")  # inputs of later stages deleted: recomputed, later stages still valid
    assert main(["run", "--config", str(recipe)]) == 0
    assert "[prepare] outputs missing" in caplog.text and "[search] done earlier, skipped" in caplog.text


def test_several_budgets_train_and_report_every_budget(tiny_teacher_dirs, tmp_path):
    """... in the layer-wise space: its students train (random and searched init), evaluate and report."""
    data = _recipe(tiny_teacher_dirs["llama"], tmp_path / "out")
    data["search"].update(params="95K,125K", tolerance=0.1, space={"layout": "layer-wise"})  # the tilted seed
    data["search"]["evolution"]["evaluations"] = 1
    data["compare"] = {"runs": ["random-ce", "searched-ce"]}
    data["eval"]["max_new_tokens"] = 0
    data["train"]["tokens"] = 512
    report = Pipeline(load_recipe(data)).run()
    budgets = json.loads((report / "summary.json").read_text())["budgets"]
    assert [b["label"] for b in budgets] == ["bin0-95k", "bin1-125k"]
    for b in budgets:
        assert [r["run"] for r in b["rows"]] == ["random-ce", "searched-ce", "teacher"]
        assert len({r["params"] for r in b["rows"][:2]}) == 1
    assert budgets[0]["rows"][0]["params"] < budgets[1]["rows"][0]["params"]
    text = (report / "report.md").read_text()
    assert "## Budget bin0-95k" in text and "## Budget bin1-125k" in text
    searched = [yaml.safe_load((tmp_path / "out" / "students" / b / "searched.yaml").read_text())
                for b in ("bin0-95k", "bin1-125k")]
    assert any("layer_sizes" in s["sizes"] for s in searched)  # a layer-wise student went all the way


def test_rung_kd_continues_the_rung_winner_and_counts_its_tokens(tiny_teacher_dirs, tmp_path):
    data = _recipe(tiny_teacher_dirs["llama"], tmp_path / "out")
    data["search"].update(rungs={"count": 1, "candidates": 2, "tokens": 512})
    data["search"]["evolution"]["evaluations"] = 3
    data["compare"] = {"runs": ["random-ce", "rung-kd"]}
    data["eval"]["max_new_tokens"] = 0
    report = Pipeline(load_recipe(data), say=lambda _: None).run()
    out = tmp_path / "out"
    best = yaml.safe_load((out / "search" / f"best-{LABEL}.yaml").read_text())
    run = out / "runs" / LABEL / "rung-kd"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["paths"]["student"] == best["rung_student"]
    assert config["tokens"] == 2048 - 512  # the rung's tokens count
    assert config["kd"]["kind"] == "forward" and config["optim"]["lr"] == INHERITED["optim"]["lr"]
    assert json.loads((run / "initial.json").read_text())["tokens"] == 512
    (budget,) = json.loads((report / "summary.json").read_text())["budgets"]
    rows = {r["run"]: r for r in budget["rows"]}
    assert rows["rung-kd"]["setup_flops"] >= budget["setup_flops"]["rungs"] > 0  # charged the search and rungs
    curve = run_curve(run, "rung-kd", "", 0.0)
    assert curve.tokens[0] == 512 and curve.tokens[-1] == run_curve(run.parent / "random-ce", "r", "").tokens[-1]

    with pytest.raises(ConfigError, match="rung-kd.*set search.rungs.count >= 1"):
        load_recipe({**data, "search": {**data["search"], "rungs": {"count": 0}}})
    with pytest.raises(ConfigError, match="rung winner has trained 4,096 tokens"):
        load_recipe({**data, "search": {**data["search"], "rungs": {"count": 1, "tokens": 4096}}})


def test_interrupted_training_resumes(tiny_teacher_dirs, tmp_path, monkeypatch):
    from headstart.training import loop

    out = tmp_path / "out"
    data = _recipe(tiny_teacher_dirs["llama"], out)
    data["search"]["rungs"] = {"count": 0}  # the stop below would also stop the rungs' short trainings
    recipe = load_recipe(data)
    original = loop.Trainer._should_stop
    monkeypatch.setattr(loop.Trainer, "_should_stop",
                        lambda self, **kw: self.counters.step == 6 or original(self, **kw))
    with pytest.raises(Interrupted):
        Pipeline(recipe, say=lambda _: None).run()
    assert not (out / "runs" / LABEL / "random-ce" / "student").exists()
    monkeypatch.setattr(loop.Trainer, "_should_stop", original)
    said: list[str] = []
    Pipeline(recipe, say=said.append).run()
    assert any(f"[train:{LABEL}:random-ce] resuming" in s for s in said)
    metrics = (out / "runs" / LABEL / "random-ce" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in metrics]
    assert steps[-1] == 2048 // (32 * 4) and sorted(set(steps)) == sorted(steps)


P = {"params": "1M"}


@pytest.mark.parametrize("change, message", [
    ({"search": {**P, "evolution": {"evaluatons": 3}}},
     r"'search.evolution.evaluatons'.*did you mean 'search.evolution.evaluations'"),
    ({"search": {**P, "evaluations": 3}}, r"unknown key 'search.evaluations'"),  # the flat key of old
    ({"trian": {}, "search": P}, r"unknown key 'trian'.*did you mean 'train'"),
    ({"search": P, "compare": {"runs": ["random"]}}, r"compare.runs 'random' is not one of"),
    ({"search": {"params": None}}, "search.params is missing"),
    ({"search": P, "train": {"tokens": "1e6x"}}, r"train.tokens must be an integer, got '1e6x'"),
    ({"search": P, "corpus": "some/dir"}, r"corpus must be a list of strings"),
    ({"search": P, "data": {"inputs": ["some/dir"]}}, r"'data' section is now 'corpus'"),
    ({"search": P, "extract": {"reconstruct": True}}, r"'extract' section is now 'reconstruct'"),
    ({"search": P, "train": {"out": "x"}}, r"train.out is set by the recipe itself"),
    ({"search": {**P, "data": "x"}}, r"search.data is set by the recipe itself"),
    ({"search": P, "train": {"kd": {"kind": "none"}}}, r"train.kd.kind is 'none', but run first-k-kd distills"),
    ({"search": P, "train": {"kd": "none"}}, r"train.kd must be a mapping of kd options"),
    ({"search": P, "compare": {"overrides": {"random-ce": {"optim": {"lr": -1}}}}},
     r"compare.overrides.random-ce.optim.lr must be above 0, got -1"),
    ({"search": P, "compare": {"overrides": {"random-ce": {"lr": 1}}}},
     r"unknown key 'compare.overrides.random-ce.lr'"),
    ({"search": {"params": "lots"}}, r"search.params cannot read the budget 'lots'"),
    ({"search": P, "compare": {"inherited": {"schedule": {"warmup": -1}}}},
     r"compare.inherited.schedule.warmup must be at least 0, got -1"),
    ({"search": P, "compare": {"inherited": {"optim": {"lrr": 1}}}},
     r"compare.inherited.optim.lrr.*did you mean 'compare.inherited.optim.lr'"),
    ({"search": P, "compare": {"inherited": 0.01}}, r"compare.inherited must be a mapping, got 0.01"),
    ({"search": P, "compare": {"inherited_batch": 0}}, r"compare.inherited_batch must be above 0, got 0"),
    ({"search": P, "compare": {"inherited_batch": 2}}, r"compare.inherited_batch must be at most 1, got 2"),
])
def test_recipe_errors_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(change)


def test_runs_from_the_teachers_weights_take_the_inherited_options():
    recipe = load_recipe({"search": {"params": "1M"}, "train": {"optim": {"lr": 1e-3}, "schedule": {"warmup": 0.1}},
                          "compare": {"overrides": {"searched-ce": {"optim": {"lr": 2e-4}}}}})
    rand, first_k, searched = (recipe.train_config(n) for n in ("random-ce", "first-k-kd", "searched-ce"))
    lr, warmup = INHERITED["optim"]["lr"], INHERITED["schedule"]["warmup"]
    assert (rand.optim.lr, rand.schedule.warmup) == (1e-3, 0.1)  # random init keeps the train section
    assert (first_k.optim.lr, first_k.schedule.warmup) == (lr, warmup)
    assert (searched.optim.lr, searched.schedule.warmup) == (2e-4, warmup)  # a run's own override wins
    assert (rand.kd.kind, first_k.kd.kind, searched.kd.kind) == ("none", "forward", "none")
    one = load_recipe({"search": {"params": "1M"}, "compare": {"inherited": {"schedule": {"warmup": 0.02}}}})
    assert (one.train_config("searched-kd").schedule.warmup, one.compare.inherited["optim"]["lr"]) == (0.02, lr)
    # the search's rungs train as those runs do, unless the search section says otherwise
    assert (recipe.search.rungs.lr, recipe.search.rungs.warmup) == (lr, warmup)
    assert (one.search.rungs.lr, one.search.rungs.warmup) == (lr, 0.02)
    own = load_recipe({"search": {"params": "1M", "rungs": {"lr": 3e-4}},
                       "compare": {"inherited": {"optim": {"lr": 1e-4}}}})
    assert own.search.rungs.lr == 3e-4
    plain = load_recipe({"search": {"params": "1M"}, "compare": {"inherited": None, "inherited_batch": 1}})
    assert plain.train_config("searched-kd").schedule.warmup == plain.train.schedule.warmup
    assert plain.train_config("searched-kd").batch_size == plain.train.batch_size


def test_runs_from_the_teachers_weights_take_a_fraction_of_the_batch():
    recipe = load_recipe({"search": {"params": "1M"}, "train": {"batch_size": 8}, "compare": {
        "overrides": {"searched-ce": {"batch_size": 6}}}})
    sizes = {n: recipe.train_config(n).batch_size for n in recipe.compare.runs}
    assert recipe.compare.inherited_batch == INHERITED_BATCH == 0.5
    assert sizes == {"random-ce": 8, "first-k-kd": 4, "searched-ce": 6, "searched-kd": 4}  # an override wins
    odd = load_recipe({"search": {"params": "1M"}, "train": {"batch_size": 1}})
    assert odd.train_config("searched-kd").batch_size == 1  # never below one window
    explicit = load_recipe({"search": {"params": "1M"}, "compare": {"inherited": {"batch_size": 16}}})
    assert explicit.train_config("searched-kd").batch_size == 16


def test_yaml_numbers_are_numbers():
    recipe = load_recipe({"search": {"params": 50e6}, "train": {"tokens": "1e6", "optim": {"lr": "3e-4"}}, "seed": 3})
    assert recipe.train.tokens == 1_000_000 and recipe.train.optim.lr == 3e-4
    assert recipe.search.seed == recipe.train.seed == 3 and recipe.budgets() == [50_000_000]


def test_a_recipe_without_a_search_section_searches_the_default_budget():
    assert load_recipe({}).budgets() == [50_000_000]
