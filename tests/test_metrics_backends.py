"""TensorBoard and W&B plot against training tokens; W&B runs are named, grouped and resumed by id."""

from __future__ import annotations

import pytest

from headstart.training.metrics import MetricsLogger, log_search


def test_tensorboard_steps_are_training_tokens(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, tensorboard=True)
    for step, tokens in ((1, 512), (2, 1024)):
        logger.log({"step": step, "tokens": tokens, "loss": 3.0 / step, "student_flops": 6 * tokens,
                    "teacher_flops": tokens})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("loss")] == [512, 1024]
    assert [e.value for e in events.Scalars("train_flops")] == [7 * 512, 7 * 1024]


def test_wandb_run_is_named_grouped_and_resumed(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "runs" / "bin0-50M" / "searched-kd"
    first = MetricsLogger(out, wandb="headstart-test", group="demo")
    first.log({"step": 1, "tokens": 512, "loss": 3.0})
    name, group, run_id = first._wandb.name, first._wandb.group, first._wandb.id
    first.close()
    assert (name, group) == ("bin0-50M/searched-kd", "demo")
    resumed = MetricsLogger(out, wandb="headstart-test", group="demo", start_step=1)
    assert resumed._wandb.id == run_id  # the same W&B run continues
    resumed.close()
    fresh = MetricsLogger(tmp_path / "other", wandb="headstart-test")  # a new run directory: a new W&B run
    assert fresh._wandb.id != run_id
    fresh.close()


def test_the_search_is_logged_best_per_bin_and_rung_losses(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    journal = [{"kind": "header"}] + [{"run": "evolution/importance", "bin": 0, "loss": x} for x in (6.0, 5.5, 5.8)]
    rungs = [{"bin": 0, "results": [{"rung": 1, "loss": 4.4, "tokens": 100}, {"rung": 1, "loss": 4.2, "tokens": 100},
                                    {"rung": 2, "loss": 4.0, "tokens": 200}]}]
    log_search(tmp_path, journal, rungs, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    best = events.Scalars("search/evolution/importance/bin0/best_loss")
    assert [(e.step, e.value) for e in best] == [(1, 6.0), (2, 5.5), (3, 5.5)]
    assert [e.value for e in events.Scalars("search/bin0/rung1_loss")] == pytest.approx([4.2, 4.4])
