"""Levers of the start: the hidden-state term with exact targets, warmup-stable-decay, KD for the
first part of training only, a lower LR for norm gains; each resumes bit for bit."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from tiny import VOCAB as TINY_VOCAB
from tiny import tiny_model, tiny_tokenizer
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

from headstart.config.train import TrainPaths
from headstart.errors import ConfigError
from headstart.extraction import build_student
from headstart.importance import compute_importance
from headstart.selection import from_sizes, full
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher
from headstart.training.hidden_loss import HiddenMap, hidden_loss_sum, hidden_map
from headstart.training.kd_loss import KDConfig
from headstart.training.loop import Trainer, lr_at
from headstart.training.stage import check
from headstart.training.step import DistillModule, StepContext, teacher_targets

SEQ = 16
IDS = torch.randint(0, TINY_VOCAB, (2, 21), generator=torch.Generator().manual_seed(5))


def test_hidden_loss_is_the_scaled_squared_error():
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(2, 3, 4, generator=g) for _ in range(2)]
    t = [torch.randn(2, 3, 4, generator=g) * (i + 1) for i in range(2)]
    want = sum(((a - b) ** 2).sum() / (b ** 2).sum(-1).mean() for a, b in zip(s, t)) / 2
    assert hidden_loss_sum(s, t).item() == pytest.approx(want.item(), rel=1e-6)
    assert hidden_loss_sum(t, t).item() == 0.0


def _hidden_sum(teacher: Teacher, spec: SubnetSpec, student, layers: str = "all") -> float:
    hidden = hidden_map(spec, layers)
    module = DistillModule(student, KDConfig("forward"), TINY_VOCAB, hidden_weight=1.0,
                           hidden_layers=hidden.student_layers)
    ctx = StepContext(module, None, KDConfig("forward"), 1.0, torch.autocast("cpu", enabled=False),
                      teacher=teacher.model, hidden=hidden, hidden_weight=1.0)
    targets = teacher_targets(ctx, IDS)
    assert len(targets.states) == len(hidden.student_layers)
    return module(IDS[:, :-1], IDS[:, 1:], targets).hidden_sum.item()


def test_exact_subnetwork_has_zero_hidden_loss():
    teacher = Teacher.from_model(tiny_model("llama"), tiny_tokenizer())
    importance = compute_importance(teacher, torch.randint(0, TINY_VOCAB, (4, 16)))
    spec = full(teacher.dims, importance)  # every channel, permuted: the same function
    assert list(spec.hidden) != sorted(spec.hidden)
    assert _hidden_sum(teacher, spec, build_student(teacher, spec)) < 1e-8
    assert _hidden_sum(teacher, spec, build_student(teacher, spec), layers="1,3") < 1e-8
    reduced = from_sizes(teacher.dims, mlp=48, order="importance", importance=importance)
    assert _hidden_sum(teacher, reduced, build_student(teacher, reduced)) > 1e-3  # a cut student is not exact


def test_hidden_layer_choice():
    spec = full(Teacher.from_model(tiny_model("llama")).dims)
    assert hidden_map(spec, "last").student_layers == (3,)
    assert hidden_map(spec, "0,2").teacher_layers == (0, 2)
    with pytest.raises(ConfigError, match="layers 0..3"):
        hidden_map(spec, "4")
    with pytest.raises(ConfigError, match="hidden.layers 'first' must be all, last"):
        config(Path("."), hidden={"layers": "first"})


def test_wsd_holds_the_peak_then_decays_linearly():
    cfg = config(Path("."), schedule={"name": "wsd", "decay": 0.25, "warmup": 2, "min_lr": 1e-4}, optim={"lr": 1e-3})
    lrs = [lr_at(s, cfg.optim.lr, cfg.schedule, 20) for s in range(20)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    assert all(lr == pytest.approx(1e-3) for lr in lrs[1:15])  # stable until the last quarter
    assert lrs[15] < 1e-3 and lrs[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(lrs[15:], lrs[16:]))
    steps = [b - a for a, b in zip(lrs[15:], lrs[16:])]
    assert max(steps) == pytest.approx(min(steps))  # linear
    cosine = config(Path("."), schedule={"warmup": 2})
    # the default still decays from the peak on
    assert lr_at(10, cosine.optim.lr, cosine.schedule, 20) < cosine.optim.lr


def _trainer(cfg, root, student_seed=1, hidden=False, resume=False):
    student, teacher = tiny_llama(student_seed), confident_teacher()
    stream = token_stream(7000)
    loader = StandInLoader(stream[:6000], SEQ, cfg.batch_size, seed=cfg.seed)
    val = StandInLoader(stream[6000:], SEQ, 8).windows[:8]
    # the stand-in student (width 32) matches the teacher's (width 48) first 32 channels
    hmap = HiddenMap((0, 1), (0, 1), tuple(range(32))) if hidden else None
    return Trainer(cfg, student, loader, out=out_dir(root), resume=resume, val_windows=val, vocab=VOCAB,
                   teacher=teacher, hidden=hmap, flops={"student": 10, "teacher": 100}), student


def _rows(root):
    return [json.loads(line) for line in open(os.path.join(out_dir(root), "metrics.jsonl"))]


def test_kd_until_stops_running_the_teacher(tmp_path):
    cfg = config(tmp_path, tokens=10 * 2 * SEQ, kd={"until": 0.3}, hidden={"weight": 0.5})
    trainer, _ = _trainer(cfg, tmp_path, hidden=True)
    trainer.fit()
    rows = _rows(tmp_path)
    assert [r["kd"] > 0 for r in rows] == [True] * 3 + [False] * 7
    assert [r["hidden"] > 0 for r in rows] == [True] * 3 + [False] * 7
    assert rows[-1]["teacher_tokens"] == 3 * 2 * SEQ
    assert rows[-1]["teacher_flops"] == 100 * 3 * 2 * SEQ  # teacher FLOPs only while distilling
    assert rows[-1]["loss"] == pytest.approx(rows[-1]["ce"])


def test_hidden_term_pulls_the_student_towards_the_teacher(tmp_path):
    cfg = config(tmp_path, tokens=30 * 2 * SEQ, kd={"kind": "none"}, hidden={"weight": 1.0}, optim={"lr": 1e-2})
    trainer, _ = _trainer(cfg, tmp_path, hidden=True)
    trainer.fit()
    rows = _rows(tmp_path)
    assert rows[-1]["hidden"] < 0.7 * rows[0]["hidden"]
    assert rows[0]["loss"] == pytest.approx(rows[0]["ce"] + rows[0]["hidden"], rel=1e-5)


def test_norm_lr_scales_the_vectors_step(tmp_path):
    frozen, _ = _trainer(config(tmp_path, tokens=3 * 2 * SEQ, optim={"norm_lr": 0.0}), tmp_path / "frozen")
    before = {n: p.detach().clone() for n, p in frozen.model.named_parameters()}
    frozen.fit()
    moved = {n: not torch.equal(before[n], p) for n, p in frozen.model.named_parameters()}
    assert any(before[n].ndim < 2 for n in moved)  # the stand-in student has norm gains to check
    assert not any(m for n, m in moved.items() if before[n].ndim < 2)  # norm gains (and biases) stay put
    assert all(m for n, m in moved.items() if before[n].ndim >= 2)
    scaled, _ = _trainer(config(tmp_path, tokens=3 * 2 * SEQ, optim={"norm_lr": 0.25}), tmp_path / "scaled")
    scaled.fit()
    matrices, vectors = scaled.optimizer.param_groups
    assert vectors["lr"] == pytest.approx(0.25 * matrices["lr"]) and matrices["lr"] > 0


def test_resume_is_bitwise_with_wsd_kd_until_and_hidden(tmp_path):
    cfg = config(tmp_path, tokens=12 * 2 * SEQ, checkpoint={"every": 5}, schedule={"name": "wsd", "decay": 0.3},
                 kd={"until": 0.5}, hidden={"weight": 0.5}, optim={"norm_lr": 0.1})
    full, full_student = _trainer(cfg, tmp_path / "full", hidden=True)
    full.fit()
    first, _ = _trainer(cfg, tmp_path / "cut", hidden=True)

    def kill_at_4(trainer):
        if trainer.counters.step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    assert first.fit(on_step=kill_at_4)["step"] == 4
    resumed, student = _trainer(cfg, tmp_path / "cut", student_seed=99, hidden=True, resume=True)
    assert resumed.fit()["step"] == 12
    assert not state_equal(full_student.state_dict(), student.state_dict())
    assert [r["hidden"] for r in _rows(tmp_path / "cut")] == [r["hidden"] for r in _rows(tmp_path / "full")]


def test_hidden_weight_needs_an_online_teacher(tmp_path):
    # paths are apart from the options now: the train stage's check refuses the pair before anything loads
    (tmp_path / "data").mkdir()
    (tmp_path / "cache").mkdir()
    paths = TrainPaths(student="student", data=str(tmp_path / "data"), out=out_dir(tmp_path),
                       teacher_cache=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="online"):
        check(paths, config(tmp_path, hidden={"weight": 1.0}))
