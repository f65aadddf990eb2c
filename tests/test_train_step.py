"""The step's contract: the teacher's targets, the loss parts it logs, one host sync, soft-capped families, bf16."""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from train_support import VOCAB, confident_teacher, one_thread, tiny_llama  # noqa: F401 (one_thread: autouse)

from headstart.lm_loss import chunked_ce_sum
from headstart.training.hidden_loss import HiddenMap
from headstart.training.kd_loss import KDConfig, kd_loss
from headstart.training.step import DistillModule, StepContext, evaluate, teacher_targets, train_step

OFF = torch.autocast("cpu", enabled=False)


def _batches(n: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (2, 17), generator=g) for _ in range(n)]


def _ctx(kd: KDConfig, autocast: torch.autocast = OFF, hidden_weight: float = 0.0, seed: int = 1) -> StepContext:
    hidden = HiddenMap((0, 1), (0, 1), tuple(range(32))) if hidden_weight else None
    module = DistillModule(tiny_llama(seed), kd, VOCAB, hidden_weight=hidden_weight,
                           hidden_layers=hidden.student_layers if hidden else ())
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3, fused=True)  # as build_optimizer makes it
    teacher = confident_teacher().eval().requires_grad_(False)
    return StepContext(module, optimizer, kd, 1.0, autocast, teacher=teacher, hidden=hidden,
                       hidden_weight=hidden_weight)


class _ScalarReads(TorchDispatchMode):
    """Counts tensor-to-Python scalar reads (``item``, ``float``, ``bool``) made by headstart's own code."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            frames = [f.filename for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
            self.count += bool(frames) and "/headstart/" in frames[-1]  # the innermost caller is ours
        return func(*args, **(kwargs or {}))


def test_the_step_reads_the_host_once_and_the_evaluation_once():
    ctx = _ctx(KDConfig("forward", alpha=0.5), hidden_weight=0.5)
    train_step(ctx, _batches(), 1)
    with _ScalarReads() as reads:
        stats = train_step(ctx, _batches(seed=1), 2)  # its one transfer is a tolist() of every logged value
    assert reads.count == 0 and all(isinstance(v, float) for v in stats.values())
    with _ScalarReads() as reads:
        evaluate(ctx.model, torch.cat(_batches(3)), 2, OFF)
    assert reads.count == 1


@pytest.mark.parametrize("kd", [KDConfig("forward", alpha=0.3, temperature=2.0), KDConfig("jsd", alpha=0.6),
                                KDConfig("none")])
def test_the_logged_loss_is_the_weighted_sum_of_the_logged_parts(kd):
    ctx = _ctx(kd, hidden_weight=0.25)
    stats = train_step(ctx, _batches(), 1)
    want = kd.ce_weight * stats["ce"] + kd.kd_weight * stats["kd"] + 0.25 * stats["hidden"]
    assert stats["hidden"] > 0 and (stats["kd"] > 0) == (kd.kind != "none")
    assert stats["loss"] == pytest.approx(want, rel=1e-6)
    assert stats["tokens"] == 2 * 2 * 16
    ce_only = train_step(ctx, _batches(), 2, distill=False)  # past --kd-until: CE alone, no teacher
    assert ce_only["kd"] == ce_only["hidden"] == 0.0 and ce_only["loss"] == pytest.approx(ce_only["ce"], rel=1e-6)


def test_the_teacher_runs_without_autograd_state():
    ctx = _ctx(KDConfig("forward"), hidden_weight=1.0)
    targets = teacher_targets(ctx, _batches(1)[0])
    assert targets.hidden.is_inference() and all(s.is_inference() for s in targets.states)
    assert targets.head is ctx.teacher.lm_head.weight and targets.softcap is None and targets.topk is None
    parts = ctx.model(_batches(1)[0][:, :-1], _batches(1)[0][:, 1:], targets)
    parts.loss.backward()  # inference tensors feed the loss without being saved for backward
    assert all(p.grad is not None for p in ctx.model.student.parameters() if p.ndim == 2)


def test_a_soft_capping_family_trains_and_scores_with_its_cap():
    student, teacher = tiny_llama(1), confident_teacher()
    student.config.final_logit_softcapping = 3.0  # as Gemma 2's config says it
    teacher.config.final_logit_softcapping = 4.0
    kd = KDConfig("forward", alpha=0.4, temperature=1.5)
    module = DistillModule(student, kd, VOCAB)  # no longer refused
    ctx = StepContext(module, None, kd, 1.0, OFF, teacher=teacher.eval().requires_grad_(False))
    batch = _batches(1)[0]
    targets = teacher_targets(ctx, batch)
    assert targets.softcap == 4.0
    got = module(batch[:, :-1], batch[:, 1:], targets)
    with torch.no_grad():
        hidden = module.adapter.hidden_states(student, batch[:, :-1]).flatten(0, 1)
        z = module.adapter.logits(student, hidden)
        tz = 4.0 * torch.tanh(teacher.lm_head(targets.hidden) / 4.0)
    want = kd_loss(z, batch[:, 1:].flatten(), kd, teacher_logits=tz)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-6)
    ce, n = module.score(batch[:, :-1], batch[:, 1:])
    ref, m = chunked_ce_sum(lambda h: module.adapter.logits(student, h), hidden, batch[:, 1:].flatten())
    assert int(n) == m and float(ce) == pytest.approx(float(ref), rel=1e-12)
    assert float(ce) == pytest.approx(float(want.ce_sum), rel=1e-5)  # validation scores the capped logits


def test_bf16_autocast_steps_stay_within_two_percent_of_fp32():
    """Five KD steps under bf16 autocast (fp32 master weights, the teacher in bf16) against fp32 from the
    same start: every logged loss within 2 % and the grad norms within 5 %."""
    kd = KDConfig("forward", alpha=0.5)
    fp32, bf16 = _ctx(kd), _ctx(kd, torch.autocast("cpu", dtype=torch.bfloat16))
    bf16.teacher.to(torch.bfloat16)
    for step, batch in enumerate(_batches(5, seed=3), start=1):
        a, b = train_step(fp32, [batch], step), train_step(bf16, [batch], step)
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-2), step
        assert b["kd"] == pytest.approx(a["kd"], rel=5e-2, abs=5e-3), step
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=5e-2), step
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert a["loss"] != b["loss"]  # bf16 really ran
