"""The trimmed tokenizer: contiguous new ids, any text round-trips, loads without headstart; the student's data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tiny import prepared_corpus
from transformers import AutoTokenizer
from vocab_support import STYLES, TEXT, arbitrary_texts, text_counts, tokenizer_of

from headstart.data import open_split, read_manifest
from headstart.errors import DataError
from headstart.vocab import (
    VocabError,
    merge_order,
    prepare_like,
    read_bpe,
    save_tokenizer,
    student_to_teacher,
    token_counts,
    trim_tokenizer,
)
from headstart.vocab.tokenizer import trimmed_json

_LOAD_WITHOUT_HEADSTART = """
import json, sys
sys.modules["headstart"] = None  # any import of headstart now fails
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.stdin.read())
print(json.dumps([[tok.encode(t, add_special_tokens=False), tok.decode(tok.encode(t, add_special_tokens=False))]
                  for t in texts]))
"""


def _order(style: str):
    tok = tokenizer_of(style)
    return tok, merge_order(tok, text_counts(tok, [TEXT]))


@pytest.mark.parametrize("style", STYLES)
def test_any_text_round_trips_at_every_size(style):
    tok, order = _order(style)
    for size in (order.required, order.required + 7, (order.required + len(tok)) // 2, len(tok)):
        kept = order.keep(size)
        student = trim_tokenizer(tok, kept)
        assert len(student) == size and sorted(student.get_vocab().values()) == list(range(size))
        for i in (0, size // 2, size - 1):  # new id i is teacher token kept[i]
            assert student.convert_ids_to_tokens(i) == tok.convert_ids_to_tokens(int(kept.kept[i]))
        for text in arbitrary_texts():
            ids = student.encode(text, add_special_tokens=False)
            assert student.decode(ids) == text
            assert tok.decode(student_to_teacher(ids, kept).tolist()) == text  # the teacher reads the same text


@pytest.mark.parametrize("style", STYLES)
def test_smaller_vocabularies_spell_text_in_more_pieces(style):
    tok, order = _order(style)
    lengths = [len(trim_tokenizer(tok, order.keep(n)).encode(TEXT, add_special_tokens=False))
               for n in (order.required, order.required + 40, len(tok))]
    assert lengths[0] > lengths[1] > lengths[2] == len(tok.encode(TEXT, add_special_tokens=False))


def test_merges_and_special_ids_are_remapped():
    tok, order = _order("byte_fallback")
    kept = order.keep(order.required + 30)
    data = trimmed_json(read_bpe(tok), kept)
    vocab = data["model"]["vocab"]
    assert all(a in vocab and b in vocab and a + b in vocab for a, b in data["model"]["merges"])
    bos = vocab["<bos>"]
    assert data["post_processor"]["special_tokens"]["<bos>"]["ids"] == [bos]
    assert {a["content"]: a["id"] for a in data["added_tokens"]} == {t: vocab[t] for t in tok.all_special_tokens}
    student = trim_tokenizer(tok, kept)
    assert student.encode("to be")[0] == bos == student.bos_token_id
    assert student.eos_token == "<eos>" and student.eos_token_id == vocab["<eos>"]


@pytest.mark.parametrize("style", STYLES)
def test_saved_tokenizer_loads_without_headstart(style, tmp_path):
    tok, order = _order(style)
    kept = order.keep(order.required + 25)
    out = save_tokenizer(trim_tokenizer(tok, kept), tmp_path / "student")
    texts = arbitrary_texts()
    run = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_HEADSTART, str(out)], input=json.dumps(texts),
                         capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(run.stdout)
    here = AutoTokenizer.from_pretrained(out)
    for text, (ids, decoded) in zip(texts, got):
        assert decoded == text and ids == here.encode(text, add_special_tokens=False)
        assert max(ids) < kept.size


def test_student_ids_outside_the_vocabulary_are_refused():
    import torch

    _, order = _order("byte_level")
    kept = order.keep(order.required)
    assert student_to_teacher(torch.tensor([[0, 1]]), kept).tolist() == [kept.kept[:2].tolist()]
    with pytest.raises(VocabError, match="another tokenizer"):
        student_to_teacher([kept.size], kept)
    other = merge_order(tokenizer_of("byte_fallback"), np.zeros(400)).keep(300)
    with pytest.raises(VocabError, match="build the order from this teacher"):
        trim_tokenizer(tokenizer_of("byte_level"), other)


def test_the_corpus_is_prepared_again_for_the_student(tmp_path):
    data = prepared_corpus(tmp_path)
    teacher = read_manifest(data)
    tok = tokenizer_of("byte_level")
    kept = merge_order(tok, token_counts(data)).keep(280)
    student = trim_tokenizer(tok, kept)
    again = prepare_like(data, student, tmp_path / "student", tokenizer_source="trimmed", workers=1)
    manifest = read_manifest(again)
    assert manifest["vocab_size"] == 280 and manifest["eos_id"] == int(kept.id_map[teacher["eos_id"]])
    for split in ("train", "search", "val"):
        assert manifest["splits"][split]["documents"] == teacher["splits"][split]["documents"]
        ids, teacher_ids = open_split(again, split), open_split(data, split)
        assert tok.decode(student_to_teacher(ids, kept).tolist()) == tok.decode(teacher_ids.tolist())
        assert len(ids) > len(teacher_ids)  # the same text in more, shorter pieces
    (tmp_path / "corpus" / "doc00.txt").write_text("changed")
    with pytest.raises(DataError, match="changed since"):
        prepare_like(data, student, tmp_path / "student2", tokenizer_source="trimmed", workers=1)
