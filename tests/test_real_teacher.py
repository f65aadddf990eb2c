"""The real offline teacher (SmolLM2-135M GGUF from PyPI) with Shakespeare calibration text."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from headstart.extraction import export
from headstart.importance import load_or_compute_importance
from headstart.selection import from_sizes

pytestmark = pytest.mark.slow


def _windows(tokenizer, texts: list[str], n: int, length: int, seed: int) -> torch.Tensor:
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    stream = torch.tensor(ids)
    starts = torch.randint(0, len(stream) - length, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.stack([stream[s:s + length] for s in starts.tolist()])


def _perplexity(model, windows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    return math.exp(float(loss))


def test_half_size_importance_beats_first_k(smollm2, tmp_path):
    from headstart.data.builtin import builtin_corpus

    plays = [text for _, text in builtin_corpus("shakespeare")]
    calib = _windows(smollm2.tokenizer, plays[:-4], 16, 256, seed=0)
    held_out = _windows(smollm2.tokenizer, plays[-4:], 8, 257, seed=1)
    scores = load_or_compute_importance(smollm2, calib)
    full = smollm2.adapter.counts().non_embedding_params
    ppl = {}
    for mode in ("importance", "first-k"):
        spec = from_sizes(smollm2.dims, layers=24, mlp=768, order=mode, importance=scores)
        assert abs(smollm2.adapter.counts(spec.shape).non_embedding_params / full - 0.5) < 0.02
        out = export(smollm2, spec, tmp_path / mode)
        student = AutoModelForCausalLM.from_pretrained(out)
        assert sum(p.numel() for p in student.parameters()) == smollm2.adapter.counts(spec.shape).params
        ppl[mode] = _perplexity(student, held_out)
    teacher_ppl = _perplexity(smollm2.model, held_out)
    print(f"held-out perplexity: teacher {teacher_ppl:.1f}, importance {ppl['importance']:.1f}, "
          f"first-k {ppl['first-k']:.3g}")
    assert teacher_ppl < ppl["importance"] < ppl["first-k"]
    assert ppl["importance"] < ppl["first-k"] / 100  # not a marginal win: first-k breaks the model

