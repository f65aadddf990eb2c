"""What a BPE tokenizer is made of, read from its ``tokenizer.json``: tokens by id, merges, style.

Two styles can encode *any* text, and so can be trimmed safely:

* ``byte_level`` (GPT-2, SmolLM2, Qwen, Llama 3): text is mapped to 256 printable stand-ins of the
  bytes before BPE, so the 256 single-byte tokens spell every text;
* ``byte_fallback`` (SentencePiece-style: Llama 2, Mistral, Gemma): a character absent from the
  vocabulary is spelled by its UTF-8 bytes as the 256 ``<0xXX>`` tokens.

A token's *parents* are the two parts of the first (lowest-rank) merge that produces it; the BPE
model can only ever emit a multi-character token through such a merge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from headstart.errors import HeadstartError

STYLES = ("byte_level", "byte_fallback")


class VocabError(HeadstartError, ValueError):
    """A vocabulary cannot be trimmed (not BPE, no byte alphabet) or a kept size is out of range."""


def byte_to_unicode() -> dict[int, str]:
    """The byte-level BPE table: each byte value -> the printable character that stands for it.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, NBSP, soft hyphen)
    are given the code points 256, 257, ... in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def fallback_token(byte: int) -> str:
    """The byte-fallback token of one byte value, e.g. ``<0x0A>``."""
    return f"<0x{byte:02X}>"


@dataclass(frozen=True)
class AddedToken:
    """One entry of ``added_tokens``: matched in the text before the BPE model runs."""

    id: int
    content: str
    special: bool


@dataclass
class BpeVocab:
    """A BPE tokenizer's parts: ``tokens[id]``, merges in rank order, added tokens, style."""

    data: dict[str, Any]  # the whole parsed tokenizer.json
    tokens: list[str]  # id -> token string; "" for an id nothing names
    merges: list[tuple[str, str]]  # in rank order
    added: list[AddedToken]
    style: str  # one of STYLES

    @property
    def size(self) -> int:
        """Number of ids (largest id + 1)."""
        return len(self.tokens)

    def ids(self) -> dict[str, int]:
        """Token string -> id (model vocabulary and added tokens)."""
        return {t: i for i, t in enumerate(self.tokens) if t}

    def base_ids(self) -> list[int]:
        """The byte tokens (the alphabet that spells any byte string) the vocabulary has, in byte order.

        Trained vocabularies may lack a few: bytes that never occur in UTF-8 (``0xC0``, ``0xF5``...) or
        never occurred in the training text (some control characters). Text that needs them cannot be
        encoded by the teacher either; a trimmed vocabulary encodes everything the teacher encodes.
        """
        ids = self.ids()
        return [ids[n] for n in base_names(self.style) if n in ids]

    def decoder_rewrites(self) -> list[tuple[str, str]]:
        """``(pattern, replacement)`` of the decoder's ``Replace`` and ``Metaspace`` steps, in order
        (e.g. ``("▁", " ")``).

        A byte-fallback spelling of such a pattern would decode unrewritten, so its own token must stay.
        """
        found: list[tuple[str, str]] = []
        _walk_decoders(self.data.get("decoder"), found)
        return found


def _walk_decoders(node: Any, found: list[tuple[str, str]]) -> None:
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "Sequence":
        for child in node.get("decoders", []):
            _walk_decoders(child, found)
    elif kind == "Replace" and isinstance(node.get("pattern"), dict) and "String" in node["pattern"]:
        found.append((node["pattern"]["String"], node.get("content", "")))
    elif kind == "Metaspace":
        found.append((node.get("replacement", "\u2581"), " "))


def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The parsed ``tokenizer.json`` of a ``tokenizers.Tokenizer`` or a transformers fast tokenizer."""
    from tokenizers import Tokenizer

    backend = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise VocabError(f"{type(tokenizer).__name__} is a slow tokenizer; load the teacher's fast tokenizer "
                         "(tokenizer.json) to trim its vocabulary")
    return json.loads(backend.to_str())


def read_bpe(tokenizer: Any) -> BpeVocab:
    """Parse a tokenizer into a :class:`BpeVocab`; raises :class:`VocabError` unless it is a byte-level or
    byte-fallback BPE."""
    data = tokenizer_json(tokenizer)
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise VocabError(f"the tokenizer's model is {model.get('type')!r}, not BPE; vocabulary trimming needs a BPE "
                         "tokenizer (keep the full vocabulary for this teacher)")
    added = [AddedToken(int(a["id"]), a["content"], bool(a.get("special"))) for a in data.get("added_tokens") or []]
    entries = [*model["vocab"].items(), *((a.content, a.id) for a in added)]
    tokens = [""] * (max(i for _, i in entries) + 1)
    for text, i in entries:
        tokens[i] = text
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    vocab = BpeVocab(data, tokens, merges, added, _style(data))
    if not vocab.base_ids():
        raise VocabError(f"the {vocab.style} tokenizer has none of its 256 byte tokens, so it cannot spell every "
                         "text and its vocabulary cannot be trimmed")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise VocabError("the BPE model uses a subword prefix or end-of-word suffix; trimming supports plain "
                         "byte-level or byte-fallback BPE only")
    return vocab


def base_names(style: str) -> list[str]:
    """The 256 byte tokens of a style, in byte order."""
    return list(byte_to_unicode().values()) if style == "byte_level" else [fallback_token(b) for b in range(256)]


def _has_type(node: Any, kind: str) -> bool:
    """True when ``node`` (a pre-tokenizer or decoder, maybe a ``Sequence``) is or holds one of ``kind``."""
    if isinstance(node, dict):
        return node.get("type") == kind or any(_has_type(v, kind) for v in node.values())
    if isinstance(node, list):
        return any(_has_type(v, kind) for v in node)
    return False


def _style(data: dict[str, Any]) -> str:
    if _has_type(data.get("pre_tokenizer"), "ByteLevel") or _has_type(data.get("decoder"), "ByteLevel"):
        return "byte_level"
    if data["model"].get("byte_fallback"):
        return "byte_fallback"
    raise VocabError("the BPE tokenizer is neither byte-level nor byte-fallback, so a trimmed vocabulary could not "
                     "spell every text; keep the full vocabulary for this teacher")


def merge_parents(vocab: BpeVocab) -> np.ndarray:
    """``int64[size, 2]``: the ids of each token's parents (its first producing merge), ``-1`` for none.

    Merges whose parts or result the vocabulary lacks are ignored (the BPE model ignores them too).
    """
    ids = vocab.ids()
    parents = np.full((vocab.size, 2), -1, dtype=np.int64)
    for a, b in vocab.merges:
        child = ids.get(a + b)
        if child is None or parents[child, 0] >= 0 or a not in ids or b not in ids:
            continue
        parents[child] = (ids[a], ids[b])
    return parents
