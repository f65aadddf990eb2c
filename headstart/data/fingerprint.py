"""Tokenizer identity: a fingerprint of the vocabulary and special tokens, and the guards built on it.

A prepared directory records the fingerprint of the tokenizer that produced its tokens. Anything
that feeds those tokens to a teacher (search, train, eval) calls :func:`check_tokenizer`, so that
token ids are never read through another vocabulary. :func:`check_vocab` accepts a model whose
embedding matrix has more rows than the tokenizer has tokens (padded tails, e.g. 152064 rows for
151665 tokens) and refuses one with fewer.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from headstart.errors import DataError

_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
_EOS_FALLBACKS = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")


def _is_raw(tokenizer: Any) -> bool:
    """True for a bare ``tokenizers.Tokenizer`` (no transformers wrapper)."""
    from tokenizers import Tokenizer

    return isinstance(tokenizer, Tokenizer)


def tokenizer_vocab(tokenizer: Any) -> dict[str, int]:
    """Token string -> id, including added and special tokens."""
    if tokenizer is None:
        raise DataError("no tokenizer: the teacher ships none; pass --tokenizer with a directory, .gguf or hub id")
    if _is_raw(tokenizer):
        return dict(tokenizer.get_vocab(with_added_tokens=True))
    return dict(tokenizer.get_vocab())


def tokenizer_vocab_size(tokenizer: Any) -> int:
    """Number of token ids the tokenizer can produce (largest id + 1)."""
    vocab = tokenizer_vocab(tokenizer)
    return max(vocab.values()) + 1 if vocab else 0


def _special_tokens(tokenizer: Any) -> dict[str, Any]:
    if _is_raw(tokenizer):
        added = tokenizer.get_added_tokens_decoder()
        return {"special": sorted((int(i), t.content) for i, t in added.items() if t.special)}
    roles = {r: str(getattr(tokenizer, r, None)) for r in _ROLES if getattr(tokenizer, r, None) is not None}
    specials = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []) or [])
    return {"roles": roles, "special": specials}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A 16-hex-digit hash of the vocabulary (token -> id) and the special tokens.

    It depends only on the tokenizer's content, never on the process or the file it came from, so
    the same tokenizer loaded from a directory or from a GGUF gives the same fingerprint.
    """
    return fingerprint_and_size(tokenizer)[0]


def fingerprint_and_size(tokenizer: Any) -> tuple[str, int]:
    """:func:`tokenizer_fingerprint` and :func:`tokenizer_vocab_size`, reading the vocabulary once."""
    vocab = sorted(tokenizer_vocab(tokenizer).items(), key=lambda kv: (kv[1], kv[0]))
    payload = json.dumps({"vocab": vocab, "special": _special_tokens(tokenizer)}, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16], (vocab[-1][1] + 1 if vocab else 0)


def eos_token_id(tokenizer: Any) -> int:
    """The id that separates documents: the tokenizer's EOS, else a conventional end-of-text token."""
    eos = None if _is_raw(tokenizer) else getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        return eos
    vocab = tokenizer_vocab(tokenizer)
    for name in _EOS_FALLBACKS:
        if name in vocab:
            return vocab[name]
    raise DataError("the tokenizer has no EOS token to separate documents; use a tokenizer that defines eos_token")


def check_tokenizer(data_dir: str | os.PathLike[str], tokenizer: Any) -> None:
    """Refuse a prepared directory whose tokens come from another tokenizer than ``tokenizer``.

    Raises :class:`DataError` naming both fingerprints (and the source the data was prepared with),
    or when the manifest's ``vocab_size`` or ``eos_id`` differ from that tokenizer's.
    """
    from headstart.data.shards import read_manifest

    manifest = read_manifest(data_dir)
    have = manifest["tokenizer"]["fingerprint"]
    want, vocab = fingerprint_and_size(tokenizer)
    if have != want:
        source = manifest["tokenizer"].get("source", "?")
        raise DataError(
            f"{data_dir} was prepared with tokenizer {have} ({source}) but the teacher's tokenizer is {want}; "
            "run `headstart prepare --tokenizer <teacher>` into a new directory"
        )
    for field, value in (("vocab_size", vocab), ("eos_id", eos_token_id(tokenizer))):
        if manifest[field] != value:
            raise DataError(
                f"{data_dir}/manifest.json records {field} {manifest[field]} but its tokenizer has {value}; the "
                "manifest was altered: rerun `headstart prepare --overwrite` for it"
            )


def check_vocab(model_vocab_size: int, tokenizer_or_data_vocab_size: int) -> None:
    """Check that a model can embed every token id of a tokenizer (or of a prepared directory).

    Extra embedding rows (a padded tail) are fine; fewer rows than token ids raise :class:`DataError`.
    """
    rows, vocab = int(model_vocab_size), int(tokenizer_or_data_vocab_size)
    if rows < vocab:
        raise DataError(
            f"the model has {rows} embedding rows but the tokenizer has {vocab} token ids, so ids >= {rows} "
            "cannot be embedded; use the teacher's own tokenizer (or a model with at least as many rows)"
        )
