"""Bytes per token and bits per byte, on both tokenizer styles and their trimmed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from vocab_support import STYLES, TEXT, arbitrary_texts, text_counts, tokenizer_of

from headstart.vocab import VocabError, bits_per_byte, merge_order, target_bytes, token_bytes, trim_tokenizer


@pytest.mark.parametrize("style", STYLES)
def test_token_bytes_add_up_to_the_text(style):
    tok = tokenizer_of(style)
    order = merge_order(tok, text_counts(tok, [TEXT]))
    for tokenizer in (tok, trim_tokenizer(tok, order.keep(order.required + 10))):
        lengths = token_bytes(tokenizer)
        assert len(lengths) == len(tokenizer)
        for text in arbitrary_texts():
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert lengths[ids].sum() == len(text.encode("utf-8"))
        assert all(lengths[tokenizer.convert_tokens_to_ids(t)] == 0 for t in tokenizer.all_special_tokens)


def test_byte_fallback_and_metaspace_lengths():
    tok = tokenizer_of("byte_fallback")
    lengths = token_bytes(tok)
    assert lengths[tok.convert_tokens_to_ids("<0xE2>")] == 1
    assert lengths[tok.convert_tokens_to_ids("\u2581the")] == 4  # "▁" is 3 bytes in UTF-8 but decodes to a space


def test_target_bytes_count_the_predicted_tokens():
    lengths = np.array([0, 1, 2, 3, 4])
    windows = np.array([[4, 1, 2, 0], [3, 3, 3, 3]])  # the first token of each window is input only
    assert target_bytes(windows, lengths).tolist() == [3, 9]
    assert target_bytes(torch.tensor(windows), lengths).tolist() == [3, 9]
    with pytest.raises(VocabError, match="another tokenizer"):
        target_bytes(np.array([[0, 5]]), lengths)
    with pytest.raises(VocabError, match="seq_len"):
        target_bytes(np.array([1, 2]), lengths)


def test_bits_per_byte_formula():
    assert bits_per_byte(100 * math.log(2), 50) == pytest.approx(2.0)
    # nats per token x tokens per byte / ln 2
    nats, tokens, nbytes = 3.2 * 1000, 1000, 3100
    assert bits_per_byte(nats, nbytes) == pytest.approx((nats / tokens) * (tokens / nbytes) / math.log(2))
    with pytest.raises(VocabError, match="at least one byte"):
        bits_per_byte(1.0, 0)
