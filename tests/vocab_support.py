"""Tiny tokenizers of both trimmable styles, built in code, and texts every trimmed tokenizer must round-trip."""

from __future__ import annotations

import json
import random

import numpy as np
from tiny import TEXT, tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, normalizers, trainers
from transformers import PreTrainedTokenizerFast

BYTE_LEVEL = "byte_level"
BYTE_FALLBACK = "byte_fallback"
STYLES = (BYTE_LEVEL, BYTE_FALLBACK)
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def arbitrary_texts() -> list[str]:
    """ASCII, Shakespeare, accents, CJK, emoji, control characters and random bytes decoded with replacement."""
    noise = random.Random(0).randbytes(400).decode("utf-8", errors="replace")
    return [
        "Hello, world!",
        TEXT,
        "Café déjà vu — naïve façade; Ærøskøbing, Ångström, São Paulo",
        "中文字符和日本語のテキスト、한국어",
        "emoji 😀🎉 and a family 👩\u200d👩\u200d👧 ok",
        "controls \x00\x01\x02\x07\t\x1b[0m\x7f end",
        noise,
        "   spaces   \n\n\n  lead and trail ",
    ]


def byte_fallback_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A Gemma-style BPE: spaces normalised to ``▁``, no pre-tokenizer split, byte fallback, ``<bos>`` added
    by a template post-processor; specials at ids 0-3, the 256 ``<0xXX>`` tokens next, learned tokens after."""
    norm = normalizers.Replace(" ", "\u2581")
    learned = Tokenizer(models.BPE())
    learned.normalizer = norm
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIALS) - 256, show_progress=False)
    learned.train_from_iterator([TEXT] * 4, trainer=trainer)
    trained = json.loads(learned.to_str())["model"]
    names = SPECIALS + [f"<0x{b:02X}>" for b in range(256)]
    names += [t for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]) if t not in names]
    vocab = {t: i for i, t in enumerate(names)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in trained["merges"]], unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    tok.normalizer = norm
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(SPECIALS)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>")


def tokenizer_of(style: str) -> PreTrainedTokenizerFast:
    """The tiny tokenizer of ``style``."""
    return tiny_tokenizer() if style == BYTE_LEVEL else byte_fallback_tokenizer()


def text_counts(tokenizer, texts: list[str]) -> np.ndarray:
    """Token counts of ``texts`` under ``tokenizer`` (one per id)."""
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for text in texts:
        np.add.at(counts, tokenizer.encode(text, add_special_tokens=False), 1)
    return counts
