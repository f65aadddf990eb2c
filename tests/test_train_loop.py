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
    state_equal,
    tiny_llama,
    token_stream,
)

from headstart.errors import CheckpointError
from headstart.train import checkpoint as ckpt_mod
from headstart.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from headstart.train.loop import Trainer, lr_at
from headstart.train.step import DivergedError

SEQ = 16


def _trainer(cfg, student_seed=1, teacher=True):
    student = tiny_llama(student_seed)
    t = confident_teacher() if teacher else None
    stream = token_stream(7000)
    loader = StandInLoader(stream[:6000], SEQ, cfg.batch_size, seed=cfg.seed)
    val = StandInLoader(stream[6000:], SEQ, 8).windows[:8]
    return Trainer(cfg, student, loader, val_windows=val, vocab=VOCAB, teacher=t), student


def _rows(cfg):
    return [json.loads(line) for line in open(os.path.join(cfg.out, "metrics.jsonl"))]


@pytest.mark.parametrize("kd", ["none", "forward", "jsd"])
def test_loss_decreases(tmp_path, kd):
    # KD alone (alpha 0) must pull the student towards the (sharp, random) teacher
    cfg = config(tmp_path, kd=kd, tokens=40 * 2 * SEQ, eval_every=20, alpha=0.0 if kd != "none" else 0.5)
    trainer, _ = _trainer(cfg)
    result = trainer.fit()
    rows = _rows(cfg)
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
    assert rows[0]["lr"] == pytest.approx(cfg.lr / 2) and rows[-1]["lr"] == pytest.approx(lr_at(39, cfg, 40))
    assert lr_at(40, cfg, 40) == pytest.approx(cfg.min_lr)


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    kw = dict(tokens=12 * 2 * 2 * SEQ, grad_accum=2, save_every=5, kd="reverse", alpha=0.3, temperature=2.0)
    full_cfg = config(tmp_path / "full", **kw)
    full, full_student = _trainer(full_cfg)
    full.fit()

    cfg = config(tmp_path / "cut", **kw)
    first, _ = _trainer(cfg)

    def kill_at_7(trainer):
        if trainer.counters.step == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # the real handler: checkpoint after this step, then stop

    result = first.fit(on_step=kill_at_7)
    assert result["interrupted"] and result["step"] == 7
    assert [p.name for p in list_checkpoints(cfg.out)] == ["step-00000005", "step-00000007"]
    # a fresh process would build everything anew: different init seed, the state comes from disk
    resumed, student = _trainer(config(tmp_path / "cut", resume=True, **kw), student_seed=99)
    assert resumed.fit()["step"] == 12
    diff = state_equal(full_student.state_dict(), student.state_dict())
    assert not diff, f"tensors differ after resume: {diff[:5]}"
    a = load_checkpoint(latest_checkpoint(full_cfg.out))
    b = load_checkpoint(latest_checkpoint(cfg.out))
    assert not state_equal(a.model, b.model)
    for (ka, va), (kb, vb) in zip(a.optimizer["state"].items(), b.optimizer["state"].items()):
        assert ka == kb and all(torch.equal(va[s], vb[s]) for s in va)
    assert [r["step"] for r in _rows(cfg)] == list(range(1, 13))


class _Killed(Exception):
    """Stands in for kill -9: the run stops between two checkpoints, nothing is saved."""


def _die_at(step):
    def hook(trainer):
        if trainer.counters.step == step:
            raise _Killed
    return hook


def test_metrics_after_a_kill_have_no_repeated_steps_and_survive_a_torn_line(tmp_path):
    kw = dict(tokens=12 * 2 * SEQ, save_every=5)
    cfg = config(tmp_path / "a", **kw)
    with pytest.raises(_Killed):  # killed at step 7: rows 1..7 logged, the checkpoint is step 5
        _trainer(cfg)[0].fit(on_step=_die_at(7))
    with open(os.path.join(cfg.out, "metrics.jsonl"), "a") as f:
        f.write('{"step": 8, "tok')  # torn by the kill mid-write
    assert _trainer(config(tmp_path / "a", resume=True, **kw))[0].fit()["step"] == 12
    assert [r["step"] for r in _rows(cfg)] == list(range(1, 13))
    csv_steps = [line.split(",")[0] for line in open(os.path.join(cfg.out, "metrics.csv")).read().splitlines()[1:]]
    assert csv_steps == [str(s) for s in range(1, 13)]

    fresh = config(tmp_path / "b", **kw)  # killed before its first checkpoint, then rerun from scratch
    with pytest.raises(_Killed):
        _trainer(fresh)[0].fit(on_step=_die_at(3))
    assert not list_checkpoints(fresh.out)
    dead = dead_pid()  # and the temporaries of a process killed while saving and exporting
    stale = [temp_name_of(Path(fresh.out) / "checkpoints" / "step-00000005", dead),
             temp_name_of(Path(fresh.out) / "student", dead)]
    for d in stale:
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"x" * 1000)
    assert _trainer(fresh)[0].fit()["step"] == 12
    assert [r["step"] for r in _rows(fresh)] == list(range(1, 13))
    assert not any(d.exists() for d in stale)



def test_resume_with_other_config_is_refused(tmp_path):
    cfg = config(tmp_path, tokens=4 * 2 * SEQ, save_every=2)
    _trainer(cfg)[0].fit()
    other = config(tmp_path, tokens=4 * 2 * SEQ, save_every=2, resume=True, lr=1e-2)
    with pytest.raises(CheckpointError, match="different configuration.*lr"):
        _trainer(other)[0].fit()
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        _trainer(config(tmp_path, tokens=4 * 2 * SEQ))[0].fit()
    # options that only change how the run is watched may change
    fine = config(tmp_path, tokens=6 * 2 * SEQ, save_every=2, resume=True)
    with pytest.raises(CheckpointError, match="tokens"):
        _trainer(fine)[0].fit()
    ok = config(tmp_path, tokens=4 * 2 * SEQ, save_every=2, resume=True, eval_every=1, keep=3)
    assert _trainer(ok)[0].fit()["step"] == 4


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg = config(tmp_path, tokens=10 * 2 * SEQ, save_every=3)
    trainer, student = _trainer(cfg)
    calls = {"n": 0}

    def poison(_module, _inputs, output):  # the student's final norm turns NaN from the 5th step on
        calls["n"] += 1
        return output * float("nan") if calls["n"] >= 5 else output

    student.model.norm.register_forward_hook(poison)
    with pytest.raises(DivergedError, match="at step 5.*last good checkpoint is .*step-00000003"):
        trainer.fit()
    assert [p.name for p in list_checkpoints(cfg.out)] == ["step-00000003"]
    ck = load_checkpoint(latest_checkpoint(cfg.out))
    assert all(torch.isfinite(t).all() for t in ck.model.values())


def test_full_disk_during_checkpoint_keeps_previous(tmp_path, monkeypatch):
    cfg = config(tmp_path, tokens=6 * 2 * SEQ, save_every=3)
    trainer, _ = _trainer(cfg)
    real_save = torch.save

    def full_disk_at_step_6(obj, f, *a, **k):
        if "step-00000006" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk_at_step_6)
    with pytest.raises(CheckpointError, match="step 6.*No space left.*step-00000003 is intact"):
        trainer.fit()
    names = sorted(os.listdir(os.path.join(cfg.out, "checkpoints")))
    assert names == ["step-00000003"], names  # no temporary directory left behind
    ck = load_checkpoint(latest_checkpoint(cfg.out))
    assert ck.step == 3 and ck.trainer["counters"]["step"] == 3


def test_activation_checkpointing_trains_the_same_weights(tmp_path):
    results = []
    for ac in (False, True):
        cfg = config(tmp_path / str(ac), tokens=3 * 2 * SEQ, activation_checkpointing=ac)
        trainer, student = _trainer(cfg)
        trainer.fit()
        assert student.is_activation_checkpointing == ac
        results.append(student.state_dict())
    diff = state_equal(*results)
    assert not diff, diff[:3]


def test_tensorboard_when_installed_else_a_clear_error(tmp_path):
    import importlib.util

    from headstart.errors import ConfigError

    cfg = config(tmp_path, tokens=2 * 2 * SEQ, tensorboard=True)
    trainer, _ = _trainer(cfg)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            trainer.fit()
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        trainer.fit()
        events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
        losses = [e.value for e in events.Scalars("loss")]
        assert len(losses) == 2 and losses == pytest.approx([r["loss"] for r in _rows(cfg)])
        assert "val_loss" in events.Tags()["scalars"]


def test_target_loss_stops_early_on_the_unchanged_schedule(tmp_path):
    """--target-loss stops at the first validation that reaches it; the steps before are the full run's."""
    full_cfg = config(tmp_path / "full", kd="none", tokens=40 * 2 * SEQ, eval_every=5)
    full, _ = _trainer(full_cfg)
    full.fit()
    vals = [(r["step"], r["val_loss"]) for r in _rows(full_cfg) if "val_loss" in r]
    target = vals[1][1]  # the second validation's loss: reached at step 10 at the latest
    cfg = config(tmp_path / "early", kd="none", tokens=40 * 2 * SEQ, eval_every=5, target_loss=target)
    trainer, _ = _trainer(cfg)
    result = trainer.fit()
    rows = _rows(cfg)
    stop = next(step for step, loss in vals if loss <= target)
    assert result["target_step"] == stop == rows[-1]["step"] and not result["interrupted"]
    assert [r["loss"] for r in rows] == [r["loss"] for r in _rows(full_cfg)[:stop]]
    assert load_checkpoint(latest_checkpoint(Path(cfg.out))).trainer["counters"]["step"] == stop


@pytest.mark.slow
def test_compile_trains_the_same_losses(tmp_path):
    """--compile (torch.compile of every block; inductor's C++ backend on CPU) follows the eager run."""
    losses = []
    for compiled in (False, True):
        cfg = config(tmp_path / str(compiled), tokens=3 * 2 * SEQ, compile=compiled)
        trainer, _ = _trainer(cfg)
        trainer.fit()
        losses.append([r["loss"] for r in _rows(cfg)])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
