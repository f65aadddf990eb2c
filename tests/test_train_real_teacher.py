"""Distillation from the real SmolLM2-135M teacher (vocabulary 49152): the chunked loss and two steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import TEXT
from train_support import StandInLoader, config, out_dir

from headstart.extraction import build_student
from headstart.selection import from_sizes
from headstart.training.kd_loss import KDConfig, chunked_kd_loss, kd_loss
from headstart.training.loop import Trainer
from headstart.training.student import load_student

pytestmark = pytest.mark.slow


def test_chunked_loss_equals_full_logits_at_the_real_vocabulary(smollm2):
    spec = from_sizes(smollm2.dims, layers=4, mlp=384)
    student = build_student(smollm2, spec).float()
    ids = torch.tensor(smollm2.tokenizer(TEXT)["input_ids"][:33])[None]
    x, y = ids[:, :-1], ids[:, 1:].flatten()
    cfg = KDConfig("jsd", alpha=0.5, temperature=2.0, beta=0.3)
    with torch.no_grad():
        t_hidden = smollm2.model.base_model(input_ids=x).last_hidden_state.flatten(0, 1)
        t_logits = smollm2.model(input_ids=x).logits.flatten(0, 1)
    hidden = student.base_model(input_ids=x).last_hidden_state.flatten(0, 1)
    head = student.get_output_embeddings().weight
    got = chunked_kd_loss(hidden, head, y, cfg, teacher_hidden=t_hidden, teacher_head=smollm2.model.lm_head.weight,
                          chunk=7)
    g_got = torch.autograd.grad(got.loss, hidden, retain_graph=True)[0]
    want = kd_loss(hidden @ head.t(), y, cfg, teacher_logits=t_logits)
    g_want = torch.autograd.grad(want.loss, hidden)[0]
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_got, g_want, rtol=1e-3, atol=1e-6)
    assert float(want.kd_sum) > 0


def test_two_kd_steps_from_a_spec_of_the_real_teacher(smollm2, tmp_path):
    spec_file = from_sizes(smollm2.dims, layers=3, mlp=256).save(tmp_path / "spec.yaml")
    student, tokenizer = load_student(str(spec_file), smollm2, seed=0)
    teacher_before = smollm2.model.model.layers[0].input_layernorm.weight.clone()
    stream = np.array(smollm2.tokenizer(TEXT * 4)["input_ids"], dtype=np.int64)
    cfg = config(tmp_path, tokens=2 * 2 * 32, seq_len=32, validation={"every": 0}, optim={"lr": 1e-3})
    loader = StandInLoader(stream, 32, 2)
    trainer = Trainer(cfg, student, loader, out=out_dir(tmp_path), val_windows=loader.windows[:2], vocab=49152,
                      teacher=smollm2.model)
    result = trainer.fit()
    assert result["step"] == 2 and np.isfinite(result["last"]["loss"]) and result["last"]["kd"] > 0
    # training the student never touches the teacher it was cut from
    assert torch.equal(smollm2.model.model.layers[0].input_layernorm.weight, teacher_before)
    assert tokenizer is smollm2.tokenizer
