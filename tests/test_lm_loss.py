"""The one cross-entropy evaluator and the adapter's model boundary."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from headstart.lm_loss import chunked_ce_sum, sum_cross_entropy
from headstart.models import get_adapter


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_chunked_evaluator_equals_the_full_forward(family):
    model = tiny_model(family).eval()
    windows = torch.randint(0, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="sum")
    for chunk in (1, 7, 4096):
        s, n = sum_cross_entropy(model, windows, batch_size=2, chunk=chunk)
        assert n == 3 * 11 and s == pytest.approx(float(ref), rel=1e-5)


def test_ignored_targets_are_not_counted():
    hidden = torch.randn(5, 4, dtype=torch.float64)
    head = torch.nn.Linear(4, 6, bias=False).double()
    targets = torch.tensor([1, -100, 2, 3, -100])
    s, n = chunked_ce_sum(head, hidden, targets, chunk=2)
    keep = targets != -100
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(head(hidden[keep]), targets[keep], reduction="sum")
    assert n == 3 and float(s) == pytest.approx(float(ref))


def test_adapter_applies_the_family_logit_transform():
    model = tiny_model("llama").eval()
    adapter = get_adapter(model.config)
    hidden = torch.randn(2, 3, model.config.hidden_size)
    plain = adapter.logits(model, hidden)
    assert adapter.logit_softcap is None
    assert torch.equal(plain, model.get_output_embeddings()(hidden))
    model.config.final_logit_softcapping = 2.0
    capped = get_adapter(model.config)
    assert torch.allclose(capped.logits(model, hidden), 2.0 * torch.tanh(plain / 2.0))


def test_the_teacher_cache_keeps_the_capped_distribution():
    from headstart.training.teacher_cache import topk_logprobs

    hidden, head = torch.randn(5, 8), torch.randn(40, 8) * 3
    lp, ids, rest = topk_logprobs(hidden, head, 4, 40, chunk=2, softcap=2.0)
    full = torch.log_softmax(2.0 * torch.tanh(hidden @ head.t() / 2.0), -1)
    want, want_ids = full.topk(4, -1)
    assert torch.equal(ids, want_ids) and torch.allclose(lp, want, atol=1e-6)
    assert torch.allclose(torch.logaddexp(lp.logsumexp(-1), rest), torch.zeros(5), atol=1e-5)


def test_training_validation_fitness_and_eval_agree_to_the_last_bit():
    from headstart.evaluation import perplexity
    from headstart.training.kd_loss import KDConfig
    from headstart.training.step import DistillModule, evaluate

    model = tiny_model("qwen3").eval()
    windows = torch.randint(0, model.config.vocab_size, (5, 17), generator=torch.Generator().manual_seed(1))
    s, n = sum_cross_entropy(model, windows, batch_size=2)
    no_autocast = torch.autocast("cpu", enabled=False)
    val = evaluate(DistillModule(model, KDConfig("forward"), model.config.vocab_size), windows, 2, no_autocast)
    assert val["val_loss"] == float(torch.tensor(s / n, dtype=torch.float32))
    assert perplexity(model, windows, 2, dtype="float32")["loss"] == pytest.approx(s / n, rel=1e-12)
