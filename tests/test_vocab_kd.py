"""KD over the kept ids against the textbook formula; embedding/head slicing; a trimmed model and its export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny import prepared_corpus, tiny_model, tiny_tokenizer
from vocab_support import TEXT, arbitrary_texts, text_counts

from headstart.training.kd_loss import TopK, topk_divergence
from headstart.vocab import (
    VocabError,
    fold_map,
    folded_log_probs,
    kept_log_probs,
    kept_topk,
    merge_order,
    save_tokenizer,
    slice_embeddings,
    student_to_teacher,
    token_counts,
    trim_model_vocab,
    trim_tokenizer,
)

KEPT = torch.tensor([5, 0, 7, 2, 9])  # new id i is teacher id KEPT[i]


def _textbook(logits: torch.Tensor, kept: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    p = torch.softmax(logits.double() / t, -1)[..., kept]  # the teacher's probabilities of the kept tokens
    return torch.log(p / p.sum(-1, keepdim=True))


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kept_log_probs_are_the_renormalised_teacher(temperature):
    logits = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(0)) * 3
    got = kept_log_probs(logits, KEPT, temperature)
    assert got.shape == (2, 3, 5)
    torch.testing.assert_close(got, _textbook(logits, KEPT, temperature).float())
    with pytest.raises(VocabError, match="beyond the teacher"):
        kept_log_probs(logits, torch.tensor([12]))


def test_kept_topk_drops_entries_and_renormalises():
    logits = torch.randn(4, 12, generator=torch.Generator().manual_seed(1)) * 3
    lp = F.log_softmax(logits, -1)
    vals, ids = lp.topk(6, -1)
    rest = lp.scatter(-1, ids, float("-inf")).logsumexp(-1)
    id_map = torch.full((12,), -1)
    id_map[KEPT] = torch.arange(len(KEPT))
    out, valid = kept_topk(TopK(vals, ids, rest), id_map)
    assert valid.tolist() == (id_map[ids] >= 0).tolist()
    p = lp.exp()
    for row in range(4):
        keep = [int(i) for i in ids[row] if id_map[i] >= 0]
        total = p[row, keep].sum() + rest[row].exp()  # kept top-k mass plus the remaining mass
        want = {int(id_map[i]): float(p[row, i] / total) for i in keep}
        got = {int(n): float(v.exp()) for n, v, ok in zip(out.index[row], out.logp[row], valid[row]) if ok}
        assert got == pytest.approx(want)
        assert float(out.log_rest[row].exp()) == pytest.approx(float(rest[row].exp() / total))
        assert torch.isinf(out.logp[row][~valid[row]]).all() and (out.index[row] >= 0).all()
        assert (out.index[row] < len(KEPT)).all()


def test_forward_kl_over_a_kept_topk_equals_the_formula():
    logits = torch.randn(3, 12, generator=torch.Generator().manual_seed(2)) * 2
    student = torch.randn(3, len(KEPT), generator=torch.Generator().manual_seed(3))
    lp = F.log_softmax(logits, -1)
    vals, ids = lp.topk(5, -1)
    id_map = torch.full((12,), -1)
    id_map[KEPT] = torch.arange(len(KEPT))
    out, valid = kept_topk(TopK(vals, ids, lp.scatter(-1, ids, float("-inf")).logsumexp(-1)), id_map)
    got = topk_divergence(student, out, "forward")
    lq = F.log_softmax(student, -1)
    for row in range(3):  # buckets: each kept top-k token, and every other kept token together
        tokens = [int(n) for n, ok in zip(out.index[row], valid[row]) if ok]
        others = [n for n in range(len(KEPT)) if n not in tokens]
        lp_b = torch.cat([out.logp[row][valid[row]], out.log_rest[row].reshape(1)])
        lq_b = torch.cat([lq[row, tokens], lq[row, others].logsumexp(-1).reshape(1)])
        want = (lp_b.exp() * (lp_b - lq_b)).sum()
        assert float(got[row]) == pytest.approx(float(want), rel=1e-5, abs=1e-6)


def test_fold_map_gives_each_token_its_first_kept_piece():
    tok = tiny_tokenizer()
    kept = merge_order(tok, text_counts(tok, [TEXT])).keep(280)
    student, fold = trim_tokenizer(tok, kept), fold_map(tok, kept)
    np.testing.assert_array_equal(fold[kept.kept], np.arange(280))  # a kept token is its own piece
    dropped = [i for i in range(len(tok)) if kept.id_map[i] < 0 and i != tok.eos_token_id]
    assert len(dropped) > 100
    for i in dropped:
        text = tok.decode([i])
        if "\ufffd" not in text:  # a whole character: the student spells the same text
            assert fold[i] == student.encode(text, add_special_tokens=False)[0]


def test_folded_log_probs_move_mass_to_the_first_piece():
    logits = torch.randn(2, 12, generator=torch.Generator().manual_seed(4)) * 2
    fold = torch.tensor([1, -1, 3, 0, 4, 0, 1, 2, 3, 4, -1, 2])  # teacher id -> new id, -1 dropped
    got = folded_log_probs(logits, fold, 5, temperature=1.5)
    p = torch.softmax(logits.double() / 1.5, -1)
    want = torch.zeros(2, 5, dtype=torch.float64)
    for t, n in enumerate(fold.tolist()):
        if n >= 0:
            want[:, n] += p[:, t]
    torch.testing.assert_close(got.double(), torch.log(want / want.sum(-1, keepdim=True)), atol=1e-6, rtol=1e-5)
    identity = torch.full((12,), -1)
    identity[KEPT] = torch.arange(len(KEPT))  # nothing folded: the renormalised teacher
    torch.testing.assert_close(folded_log_probs(logits, identity, len(KEPT)), kept_log_probs(logits, KEPT))


def test_slicing_keeps_rows_and_ties():
    embed, head, bias = torch.randn(12, 4), torch.randn(12, 4), torch.randn(12)
    e, h, b = slice_embeddings(embed, head, KEPT, bias)
    assert torch.equal(e, embed[KEPT]) and torch.equal(h, head[KEPT]) and torch.equal(b, bias[KEPT])
    e, h, b = slice_embeddings(embed, embed, KEPT)
    assert h is e and b is None
    assert slice_embeddings(embed, None, KEPT)[1] is None
    with pytest.raises(VocabError, match="beyond the matrix"):
        slice_embeddings(embed, None, torch.tensor([12]))


_LOAD_MODEL_WITHOUT_HEADSTART = """
import json, sys
sys.modules["headstart"] = None  # any import of headstart now fails
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
texts = json.loads(sys.stdin.read())
ids = tok.encode(texts[0], add_special_tokens=False)
with torch.no_grad():
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
print(json.dumps({"ids": ids, "logp": logp.tolist(), "round_trip": [tok.decode(tok.encode(t)) == t for t in texts]}))
"""


@pytest.mark.parametrize("family", ["smollm2", "llama"])  # tied and untied heads
def test_trimmed_export_matches_the_renormalised_student(family, tmp_path):
    data = prepared_corpus(tmp_path)
    tok, full = tiny_tokenizer(), tiny_model(family)
    kept = merge_order(tok, token_counts(data)).keep(300)
    student = trim_model_vocab(tiny_model(family), kept)
    assert student.config.vocab_size == 300 and student.get_output_embeddings().weight.shape[0] == 300
    assert (student.get_output_embeddings().weight is student.get_input_embeddings().weight) == (family == "smollm2")
    out = tmp_path / "student"
    save_tokenizer(trim_tokenizer(tok, kept), out)
    student.save_pretrained(out)
    run = subprocess.run([sys.executable, "-c", _LOAD_MODEL_WITHOUT_HEADSTART, str(out)],
                         input=json.dumps([TEXT, *arbitrary_texts()]), capture_output=True, text=True, timeout=300,
                         check=True)
    got = json.loads(run.stdout)
    assert all(got["round_trip"])
    teacher_ids = student_to_teacher(torch.tensor([got["ids"]]), kept)
    with torch.no_grad():
        want = kept_log_probs(full(teacher_ids).logits[0], torch.as_tensor(kept.kept))
    torch.testing.assert_close(torch.tensor(got["logp"], dtype=torch.float64), want.double(), atol=1e-5, rtol=1e-5)
