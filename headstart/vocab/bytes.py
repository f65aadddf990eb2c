"""Bits per byte: a loss that compares students whose tokenizers differ.

Nats per token depend on how long the tokens are; over the same text, ``nats_sum / (bytes * ln 2)``
does not. :func:`token_bytes` gives the exact UTF-8 length of the text each token stands for, so the
bytes of the predicted targets of any windows are a lookup (:func:`target_bytes`).

Special tokens (EOS, BOS, ...) stand for no text and count 0 bytes; their loss still counts in the
numerator unless the caller masks it, which treats "the document ends here" as part of the text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from headstart.vocab.bpe import BpeVocab, VocabError, byte_to_unicode, fallback_token, read_bpe


def token_bytes(tokenizer: Any) -> np.ndarray:
    """``int64[vocab size]``: the UTF-8 length of the text each token id decodes to.

    Byte-level tokens: one byte per character (each character stands for a byte). Byte-fallback tokens:
    ``<0xXX>`` is one byte, any other token its text after the decoder's rewrites (``▁`` -> space). Special
    tokens and ids nothing names: 0; other added tokens: their text.
    """
    return vocab_bytes(read_bpe(tokenizer))


def vocab_bytes(vocab: BpeVocab) -> np.ndarray:
    """:func:`token_bytes` of a parsed vocabulary."""
    out = np.zeros(vocab.size, dtype=np.int64)
    added = {a.id: a for a in vocab.added}
    stands = set(byte_to_unicode().values())
    fallback, rewrites = {fallback_token(b) for b in range(256)}, vocab.decoder_rewrites()
    for i, text in enumerate(vocab.tokens):
        if i in added:
            out[i] = 0 if added[i].special else len(text.encode("utf-8"))
        elif vocab.style == "byte_level":
            out[i] = sum(1 if c in stands else len(c.encode("utf-8")) for c in text)
        else:
            out[i] = 1 if text in fallback else len(_rewrite(text, rewrites).encode("utf-8"))
    return out


def _rewrite(text: str, rewrites: list[tuple[str, str]]) -> str:
    for pattern, replacement in rewrites:
        text = text.replace(pattern, replacement)
    return text


def target_bytes(windows: Any, byte_lengths: Any) -> np.ndarray:
    """``int64[B]``: the bytes of the predicted targets (tokens ``1 .. L``) of each window ``[B, L + 1]``.

    ``windows`` is a numpy array or torch tensor of token ids; ``byte_lengths`` is :func:`token_bytes`.
    """
    ids = np.asarray(windows.cpu() if hasattr(windows, "cpu") else windows)
    lengths = np.asarray(byte_lengths, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise VocabError(f"windows must be [batch, seq_len + 1] with seq_len >= 1, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(lengths)):
        raise VocabError(f"window token ids must lie in [0, {len(lengths)}); the byte lengths belong to another "
                         "tokenizer")
    return lengths[ids[:, 1:].astype(np.int64)].sum(axis=1)


def bits_per_byte(nats_sum: float, byte_sum: float) -> float:
    """``nats_sum / (byte_sum * ln 2)``: summed loss in nats over text of ``byte_sum`` bytes, in bits per byte."""
    if not byte_sum > 0:
        raise VocabError(f"bits per byte needs text of at least one byte, got {byte_sum}")
    return float(nats_sum) / (float(byte_sum) * math.log(2))
