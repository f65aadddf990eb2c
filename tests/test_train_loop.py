"""The training loop: learning, bitwise resume, refusals, NaN stop, full disk."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from tiny import dead_pid, temp_name_of
from train_support import (  # noqa: F401 (one_thread is an autouse fixture)
    VOCAB,
    StandInLoader,
    confident_teacher,
    config,
    one_thread,
    out_dir,
    state_equal,
    tiny_llama,
    token_stream,
)

from headstart.errors import CheckpointError
from headstart.training import checkpoint as ckpt_mod
from headstart.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from headstart.training.loop import Trainer, lr_at
from headstart.training.step import DivergedError

SEQ = 16


def _trainer(cfg, root, student_seed=1, teacher=True, resume=False):
    student = tiny_llama(student_seed)
    t = confident_teacher() if teacher else None
    stream = token_stream(7000)
    loader = StandInLoader(stream[:6000], SEQ, cfg.batch_size, seed=cfg.seed)
    val = StandInLoader(stream[6000:], SEQ, 8).windows[:8]
    trainer = Trainer(cfg, student, loader, out=out_dir(root), resume=resume, val_windows=val, vocab=VOCAB, teacher=t)
    return trainer, student


def _rows(root):
    return [json.loads(line) for line in open(os.path.join(out_dir(root), "metrics.jsonl"))]


@pytest.mark.parametrize("kd", ["none", "forward", "jsd"])
def test_loss_decreases(tmp_path, kd):
    # KD alone (alpha 0) must pull the student towards the (sharp, random) teacher
    cfg = config(tmp_path, tokens=40 * 2 * SEQ, kd={"kind": kd, "alpha": 0.0 if kd != "none" else 0.5},
                 validation={"every": 20})
    trainer, _ = _trainer(cfg, tmp_path)
    result = trainer.fit()
    rows = _rows(tmp_path)
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert result["step"] == 40 and len(rows) == 40
    assert last < 0.8 * first, (first, last)
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(vals) == 2
    if kd == "none":
        assert vals[-1] < vals[0]
    else:
        assert rows[-1]["kd"] < rows[0]["kd"] and rows[-1]["teacher_tokens"] == rows[-1]["tokens"]
    if kd == "none":
        assert rows[-1]["kd"] == 0 and rows[-1]["teacher_tokens"] == 0
    # the schedule: warmup then cosine to the floor
    lr = cfg.optim.lr
    assert rows[0]["lr"] == pytest.approx(lr / 2) and rows[-1]["lr"] == pytest.approx(lr_at(39, lr, cfg.schedule, 40))
    assert lr_at(40, lr, cfg.schedule, 40) == pytest.approx(cfg.schedule.min_lr)


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    cfg = config(tmp_path, tokens=12 * 2 * 2 * SEQ, optim={"grad_accum": 2}, checkpoint={"every": 5},
                 kd={"kind": "reverse", "alpha": 0.3, "temperature": 2.0})
    full, full_student = _trainer(cfg, tmp_path / "full")
    full.fit()

    first, _ = _trainer(cfg, tmp_path / "cut")

    def kill_at_7(trainer):
        if trainer.counters.step == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # the real handler: checkpoint after this step, then stop

    result = first.fit(on_step=kill_at_7)
    assert result["interrupted"] and result["step"] == 7
    assert [p.name for p in list_checkpoints(out_dir(tmp_path / "cut"))] == ["step-00000005", "step-00000007"]
    # a fresh process would build everything anew: different init seed, the state comes from disk
    resumed, student = _trainer(cfg, tmp_path / "cut", resume=True, student_seed=99)
    assert resumed.fit()["step"] == 12
    diff = state_equal(full_student.state_dict(), student.state_dict())
    assert not diff, f"tensors differ after resume: {diff[:5]}"
    a = load_checkpoint(latest_checkpoint(out_dir(tmp_path / "full")))
    b = load_checkpoint(latest_checkpoint(out_dir(tmp_path / "cut")))
    assert not state_equal(a.model, b.model)
    for (ka, va), (kb, vb) in zip(a.optimizer["state"].items(), b.optimizer["state"].items()):
        assert ka == kb and all(torch.equal(va[s], vb[s]) for s in va)
    assert [r["step"] for r in _rows(tmp_path / "cut")] == list(range(1, 13))


class _Killed(Exception):
    """Stands in for kill -9: the run stops between two checkpoints, nothing is saved."""


def _die_at(step):
    def hook(trainer):
        if trainer.counters.step == step:
            raise _Killed
    return hook


def test_metrics_after_a_kill_have_no_repeated_steps_and_survive_a_torn_line(tmp_path):
    cfg = config(tmp_path, tokens=12 * 2 * SEQ, checkpoint={"every": 5})
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(_Killed):  # killed at step 7: rows 1..7 logged, the checkpoint is step 5
        _trainer(cfg, a)[0].fit(on_step=_die_at(7))
    with open(os.path.join(out_dir(a), "metrics.jsonl"), "a") as f:
        f.write('{"step": 8, "tok')  # torn by the kill mid-write
    assert _trainer(cfg, a, resume=True)[0].fit()["step"] == 12
    assert [r["step"] for r in _rows(a)] == list(range(1, 13))
    csv_steps = [line.split(",")[0] for line in open(os.path.join(out_dir(a), "metrics.csv")).read().splitlines()[1:]]
    assert csv_steps == [str(s) for s in range(1, 13)]

    with pytest.raises(_Killed):  # killed before its first checkpoint, then rerun from scratch
        _trainer(cfg, b)[0].fit(on_step=_die_at(3))
    assert not list_checkpoints(out_dir(b))
    dead = dead_pid()  # and the temporaries of a process killed while saving and exporting
    stale = [temp_name_of(Path(out_dir(b)) / "checkpoints" / "step-00000005", dead),
             temp_name_of(Path(out_dir(b)) / "student", dead)]
    for d in stale:
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"x" * 1000)
    assert _trainer(cfg, b)[0].fit()["step"] == 12
    assert [r["step"] for r in _rows(b)] == list(range(1, 13))
    assert not any(d.exists() for d in stale)



def test_resume_with_other_config_is_refused(tmp_path):
    cfg = config(tmp_path, tokens=4 * 2 * SEQ, checkpoint={"every": 2})
    _trainer(cfg, tmp_path)[0].fit()
    other = config(tmp_path, tokens=4 * 2 * SEQ, checkpoint={"every": 2}, optim={"lr": 0.01})
    with pytest.raises(CheckpointError, match="different configuration.*lr"):
        _trainer(other, tmp_path, resume=True)[0].fit()
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        _trainer(config(tmp_path, tokens=4 * 2 * SEQ), tmp_path)[0].fit()
    fine = config(tmp_path, tokens=6 * 2 * SEQ, checkpoint={"every": 2})
    with pytest.raises(CheckpointError, match="tokens"):
        _trainer(fine, tmp_path, resume=True)[0].fit()
    # options that only change how the run is watched may change
    ok = config(tmp_path, tokens=4 * 2 * SEQ, checkpoint={"every": 2, "keep": 3}, validation={"every": 1})
    assert _trainer(ok, tmp_path, resume=True)[0].fit()["step"] == 4


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg = config(tmp_path, tokens=10 * 2 * SEQ, checkpoint={"every": 3})
    trainer, student = _trainer(cfg, tmp_path)
    calls = {"n": 0}

    def poison(_module, _inputs, output):  # the student's final norm turns NaN from the 5th step on
        calls["n"] += 1
        return output * float("nan") if calls["n"] >= 5 else output

    student.model.norm.register_forward_hook(poison)
    with pytest.raises(DivergedError, match="at step 5.*last good checkpoint is .*step-00000003"):
        trainer.fit()
    assert [p.name for p in list_checkpoints(out_dir(tmp_path))] == ["step-00000003"]
    ck = load_checkpoint(latest_checkpoint(out_dir(tmp_path)))
    assert all(torch.isfinite(t).all() for t in ck.model.values())


def test_full_disk_during_checkpoint_keeps_previous(tmp_path, monkeypatch):
    cfg = config(tmp_path, tokens=6 * 2 * SEQ, checkpoint={"every": 3})
    trainer, _ = _trainer(cfg, tmp_path)
    real_save = torch.save

    def full_disk_at_step_6(obj, f, *a, **k):
        if "step-00000006" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk_at_step_6)
    with pytest.raises(CheckpointError, match="step 6.*No space left.*step-00000003 is intact"):
        trainer.fit()
    names = sorted(os.listdir(os.path.join(out_dir(tmp_path), "checkpoints")))
    assert names == ["step-00000003"], names  # no temporary directory left behind
    ck = load_checkpoint(latest_checkpoint(out_dir(tmp_path)))
    assert ck.step == 3 and ck.trainer["counters"]["step"] == 3


def test_activation_checkpointing_trains_the_same_weights(tmp_path):
    results = []
    for ac in (False, True):
        cfg = config(tmp_path, tokens=3 * 2 * SEQ, runtime={"activation_checkpointing": ac})
        trainer, student = _trainer(cfg, tmp_path / str(ac))
        trainer.fit()
        assert student.is_activation_checkpointing == ac
        results.append(student.state_dict())
    diff = state_equal(*results)
    assert not diff, diff[:3]


def test_tensorboard_when_installed_else_a_clear_error(tmp_path):
    import importlib.util

    from headstart.errors import ConfigError

    cfg = config(tmp_path, tokens=2 * 2 * SEQ, logging={"tensorboard": True})
    trainer, _ = _trainer(cfg, tmp_path)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            trainer.fit()
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        trainer.fit()
        events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
        losses = [e.value for e in events.Scalars("loss")]
        assert len(losses) == 2 and losses == pytest.approx([r["loss"] for r in _rows(tmp_path)])
        assert "val_loss" in events.Tags()["scalars"]


def test_target_loss_stops_early_on_the_unchanged_schedule(tmp_path):
    """validation.target_loss stops at the first validation that reaches it; the steps before are the full run"s."""
    full_cfg = config(tmp_path, tokens=40 * 2 * SEQ, kd={"kind": "none"}, validation={"every": 5})
    full, _ = _trainer(full_cfg, tmp_path / "full")
    full.fit()
    vals = [(r["step"], r["val_loss"]) for r in _rows(tmp_path / "full") if "val_loss" in r]
    target = vals[1][1]  # the second validation's loss: reached at step 10 at the latest
    cfg = config(tmp_path, tokens=40 * 2 * SEQ, kd={"kind": "none"}, validation={"every": 5, "target_loss": target})
    trainer, _ = _trainer(cfg, tmp_path / "early")
    result = trainer.fit()
    rows = _rows(tmp_path / "early")
    stop = next(step for step, loss in vals if loss <= target)
    assert result["target_step"] == stop == rows[-1]["step"] and not result["interrupted"]
    assert [r["loss"] for r in rows] == [r["loss"] for r in _rows(tmp_path / "full")[:stop]]
    assert load_checkpoint(latest_checkpoint(out_dir(tmp_path / "early"))).trainer["counters"]["step"] == stop


@pytest.mark.slow
def test_compile_trains_the_same_losses(tmp_path):
    """runtime.compile (torch.compile of every block; inductor's C++ backend on CPU) follows the eager run."""
    losses = []
    for compiled in (False, True):
        cfg = config(tmp_path, tokens=3 * 2 * SEQ, runtime={"compile": compiled})
        trainer, _ = _trainer(cfg, tmp_path / str(compiled))
        trainer.fit()
        losses.append([r["loss"] for r in _rows(tmp_path / str(compiled))])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
