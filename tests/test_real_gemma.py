"""The second real offline teacher, builtin:gemma3-270m (a Q4_K_M GGUF joined from PyPI chunk wheels;
Gemma Terms of Use), on Shakespeare: the full spec is the teacher, a half-width cut exports and reloads."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from headstart.extraction import build_student, export
from headstart.importance import compute_importance
from headstart.lm_loss import sum_cross_entropy
from headstart.selection import from_sizes, full
from headstart.teacher import load_teacher

pytestmark = pytest.mark.slow

LINES = (
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
    "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles. "
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. "
    "Now is the winter of our discontent Made glorious summer by this sun of York. "
    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him."
)


@pytest.fixture(scope="module")
def gemma3():
    return load_teacher("builtin:gemma3-270m")


def _windows(tokenizer) -> torch.Tensor:
    ids = tokenizer(LINES)["input_ids"]  # with <bos>: Gemma's loss without it is several times worse
    assert ids[0] == tokenizer.bos_token_id
    return torch.tensor([ids])


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_builtin_gemma3_full_spec_and_half_width_export(gemma3, tmp_path):
    t = gemma3
    assert t.model.config.model_type == "gemma3_text" and t.dims.vocab_size == 262_144
    assert t.adapter.counts().params == sum(p.numel() for p in t.model.parameters()) == 268_098_176
    assert (t.model.config.final_logit_softcapping, t.adapter.logit_softcap) == (None, None)
    ids = _windows(t.tokenizer)
    whole = build_student(t, full(t.dims), share=True)
    teacher_logits = _logits(t.model, ids)
    assert (_logits(whole, ids) - teacher_logits).abs().max() < 1e-4 * teacher_logits.abs().max()
    nats, count = sum_cross_entropy(t.model, ids)
    teacher_loss = nats / count
    assert teacher_loss < 4.0  # a working teacher: about 3.3 here (uniform over the vocabulary: 12.5)

    from headstart.data.builtin import builtin_corpus

    hamlet = next(text for name, text in builtin_corpus("shakespeare") if "hamlet" in name)
    calib = torch.tensor(t.tokenizer(hamlet[20000:30000])["input_ids"][:4 * 128]).view(4, 128)
    scores = compute_importance(t, calib, batch_size=2)
    spec = from_sizes(t.dims, hidden=320, heads_per_group=2, mlp=1024, order="importance", importance=scores)
    student = build_student(t, spec)
    out = export(t, spec, tmp_path / "half", student=student)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.layer_types == t.model.config.layer_types and reloaded.config.head_dim == 256
    assert sum(p.numel() for p in reloaded.parameters()) == t.adapter.counts(spec.shape).params
    assert (_logits(reloaded, ids) - _logits(student, ids)).abs().max() < 1e-4 * teacher_logits.abs().max()
    half = sum_cross_entropy(reloaded, ids)
    # Untrained, a half-hidden Gemma is no better than chance (its loss is above log(vocab)); an
    # importance-ordered half MLP keeps most of the teacher.
    narrow = build_student(t, from_sizes(t.dims, mlp=1024, order="importance", importance=scores), share=True)
    mlp = sum_cross_entropy(narrow, ids)
    print(f"gemma3-270m on famous lines (nats/token): teacher {teacher_loss:.3f}, half width untrained "
          f"{half[0] / half[1]:.3f} ({t.adapter.counts(spec.shape).params:,} params), half MLP {mlp[0] / mlp[1]:.3f}")
    assert math.isfinite(half[0]) and teacher_loss < mlp[0] / mlp[1] < teacher_loss + 2.0
