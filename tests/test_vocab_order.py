"""Token counts of a prepared directory and the merge-closed order of a teacher's vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny import prepared_corpus
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from vocab_support import STYLES, TEXT, arbitrary_texts, text_counts, tokenizer_of

from headstart.data import open_split
from headstart.vocab import KeptVocab, VocabError, VocabOrder, merge_order, read_bpe, token_counts
from headstart.vocab.bpe import merge_parents


def _hand_built() -> PreTrainedTokenizerFast:
    """A byte-fallback BPE whose order can be worked out by hand: a, b, c, ab, abc, bc after the bytes."""
    names = ["<unk>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "a", "b", "c", "ab", "abc", "bc"]
    vocab = {t: i for i, t in enumerate(names)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), ("ab", "c"), ("b", "c")], unk_token="<unk>",
                               byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(["<unk>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_token_counts_are_the_train_split_bincount(tmp_path):
    data = prepared_corpus(tmp_path)
    counts = token_counts(data)
    train = open_split(data, "train")
    assert counts.sum() == len(train)
    np.testing.assert_array_equal(counts, np.bincount(train, minlength=len(counts)))
    assert token_counts(data, "val").sum() == len(open_split(data, "val"))


def test_order_by_hand():
    tok = _hand_built()
    ids = tok.get_vocab()
    counts = np.zeros(len(ids), dtype=np.int64)
    counts[ids["bc"]], counts[ids["abc"]], counts[ids["c"]] = 20, 10, 3
    order = merge_order(tok, counts)
    # required: <unk>, the 256 bytes, and ▁ (the decoder rewrites it, so its byte spelling would not decode)
    assert order.required == 258
    assert order.order[:257].tolist() == list(range(257)) and order.order[257] == ids["\u2581"]
    # b and c carry bc's 20, a and ab abc's 10: b, c, bc, then a, ab, abc
    assert [tok.convert_ids_to_tokens(int(i)) for i in order.order[258:]] == ["b", "c", "bc", "a", "ab", "abc"]


@pytest.mark.parametrize("style", STYLES)
def test_every_prefix_is_merge_closed(style):
    tok = tokenizer_of(style)
    order = merge_order(tok, text_counts(tok, [TEXT, *arbitrary_texts()]))
    parents = merge_parents(read_bpe(tok))
    position = {int(t): i for i, t in enumerate(order.order)}
    assert len(position) == len(order.order) == len(tok)
    for i, token in enumerate(order.order):
        assert all(position[int(p)] < i for p in parents[token] if p >= 0)
    specials = {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    assert specials <= set(order.order[: order.required].tolist())


@pytest.mark.parametrize("style", STYLES)
def test_used_tokens_and_their_ancestors_come_first(style):
    tok = tokenizer_of(style)
    counts = text_counts(tok, ["To be, or not to be, that is the question"])
    order = merge_order(tok, counts)
    parents = merge_parents(read_bpe(tok))
    needed, todo = set(), list(np.flatnonzero(counts).tolist())
    while todo:
        t = todo.pop()
        if t not in needed:
            needed.add(t)
            todo.extend(int(p) for p in parents[t] if p >= 0)
    needed -= set(order.order[: order.required].tolist())
    head = order.order[order.required : order.required + len(needed)]
    assert set(head.tolist()) == needed
    rest = order.order[order.required + len(needed):]
    assert len(rest) > 50 and rest.tolist() == sorted(rest.tolist())  # unused: by id, parents first anyway


def test_roles_can_be_named_but_the_post_processor_and_unk_stay():
    tok = tokenizer_of("byte_fallback")
    order = merge_order(tok, text_counts(tok, [TEXT]), specials=["<eos>"])
    required = set(tok.convert_ids_to_tokens(order.order[: order.required].tolist()))
    assert {"<eos>", "<bos>", "<unk>"} <= required and "<pad>" not in required
    assert order.required == 3 + 256 + 1  # and ▁, which the decoder rewrites


def test_keep_gives_contiguous_ids_and_an_id_map():
    tok = tokenizer_of("byte_level")
    order = merge_order(tok, text_counts(tok, [TEXT]))
    kept = order.keep(300)
    assert kept.size == 300 and kept.kept.tolist() == order.order[:300].tolist()
    id_map = kept.id_map
    assert len(id_map) == len(tok) and (id_map >= 0).sum() == 300
    np.testing.assert_array_equal(id_map[kept.kept], np.arange(300))
    assert KeptVocab.from_dict(json.loads(json.dumps(kept.to_dict()))).kept.tolist() == kept.kept.tolist()


def test_order_saves_and_loads(tmp_path):
    tok = tokenizer_of("byte_fallback")
    order = merge_order(tok, text_counts(tok, [TEXT]))
    back = VocabOrder.load(order.save(tmp_path / "order.json"))
    assert back.order.tolist() == order.order.tolist()
    assert (back.required, back.teacher_size, back.style) == (order.required, order.teacher_size, "byte_fallback")


def test_out_of_range_sizes_are_one_line_errors(tmp_path):
    tok = tokenizer_of("byte_level")
    order = merge_order(tok, text_counts(tok, [TEXT]))
    for size in (order.required - 1, len(tok) + 1, 1.5, True):
        with pytest.raises(VocabError) as err:
            order.keep(size)
        assert "\n" not in str(err.value)
    with pytest.raises(VocabError, match="not a vocabulary order"):
        VocabOrder.from_dict({"format": "other"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(VocabError, match="cannot read"):
        VocabOrder.load(tmp_path / "bad.json")
    with pytest.raises(VocabError, match="distinct teacher ids"):
        KeptVocab.from_dict({"kept": [1, 1], "teacher_size": 5})


def test_bad_counts_and_specials_are_refused():
    tok = tokenizer_of("byte_level")
    with pytest.raises(VocabError, match="non-negative"):
        merge_order(tok, -np.ones(len(tok)))
    with pytest.raises(VocabError, match="one per teacher id"):
        merge_order(tok, np.ones(len(tok) + 3))
    with pytest.raises(VocabError, match="not in the tokenizer"):
        merge_order(tok, np.zeros(len(tok)), specials=["<nope>"])
    padded = np.zeros(len(tok) + 64, dtype=np.int64)  # a model's padded tail of rows: harmless
    assert len(merge_order(tok, padded).order) == len(tok)


def test_tokenizers_that_cannot_be_trimmed():
    word = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(VocabError, match="not BPE"):
        read_bpe(word)
    chars = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    chars.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(VocabError, match="neither byte-level nor byte-fallback"):
        read_bpe(chars)
    with pytest.raises(VocabError, match="slow tokenizer"):
        read_bpe(object())
