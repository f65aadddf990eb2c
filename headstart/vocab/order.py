"""A merge-closed order of a teacher's vocabulary, and the kept prefix of it.

:func:`merge_order` puts the *required* tokens first (the tokenizer's special-token roles, the 256 byte
tokens, and for byte fallback the characters its decoder rewrites, e.g. ``▁``), then every other token
by descending corpus frequency (ties by id), each only after both of its merge parents. Every prefix of
the order is therefore closed under the merges, so :meth:`VocabOrder.keep` with any ``V`` at or above
the required count gives a valid trimmed vocabulary — the analogue of importance order for widths.

A parent is placed as early as its most frequent descendant needs it: a token's priority is the largest
count among itself and everything built from it (a parent such as ``Ġt`` is rarely emitted on its own,
yet every frequent ``Ġthe`` needs it).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart import io
from headstart.errors import DataError
from headstart.vocab.bpe import BpeVocab, VocabError, merge_parents, read_bpe

FORMAT = "headstart-vocab-order/1"
_COUNT_CHUNK = 1 << 24  # tokens per bincount call, so a large shard is never copied to int64 whole


def token_counts(data_dir: str | os.PathLike[str], split: str = "train") -> np.ndarray:
    """``int64[vocab_size]``: how often each token id occurs in ``split`` of a prepared directory."""
    from headstart.data.shards import TokenStream

    stream = TokenStream(data_dir, split)
    size = int(stream.manifest["vocab_size"])
    counts = np.zeros(size, dtype=np.int64)
    for shard in stream.shards:
        for start in range(0, len(shard), _COUNT_CHUNK):
            part = np.bincount(shard[start : start + _COUNT_CHUNK], minlength=size)
            if len(part) > size:
                raise DataError(f"{data_dir} holds token ids >= its vocab_size {size}; rerun `headstart prepare "
                                "--overwrite`")
            counts += part
    return counts


@dataclass(frozen=True)
class KeptVocab:
    """The tokens a student keeps: teacher ids in new-id order (new id ``i`` is teacher id ``kept[i]``)."""

    kept: np.ndarray  # int64[V]
    teacher_size: int  # ids of the teacher's tokenizer
    fingerprint: str  # the teacher tokenizer's (headstart.data.tokenizer_fingerprint)

    @property
    def size(self) -> int:
        """The student's vocabulary size V."""
        return len(self.kept)

    @property
    def id_map(self) -> np.ndarray:
        """``int64[teacher_size]``: teacher id -> new id, ``-1`` for a dropped token."""
        out = np.full(self.teacher_size, -1, dtype=np.int64)
        out[self.kept] = np.arange(len(self.kept), dtype=np.int64)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (:meth:`from_dict` reads it back)."""
        return {"kept": self.kept.tolist(), "teacher_size": self.teacher_size, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeptVocab:
        """The inverse of :meth:`to_dict`; raises :class:`VocabError` on a malformed one."""
        kept, size = np.asarray(data.get("kept", []), dtype=np.int64), int(data.get("teacher_size", 0))
        distinct = kept.ndim == 1 and len(np.unique(kept)) == len(kept)
        if not distinct or (len(kept) and not 0 <= kept.min() <= kept.max() < size):
            raise VocabError("a kept vocabulary must list distinct teacher ids below teacher_size; rebuild it")
        return cls(kept, size, str(data.get("fingerprint", "")))


@dataclass(frozen=True)
class VocabOrder:
    """Every named teacher token, required ones first, each after its merge parents."""

    order: np.ndarray  # int64[N]: teacher ids
    required: int  # the first ``required`` entries must always be kept
    teacher_size: int
    style: str
    fingerprint: str  # the teacher tokenizer's (headstart.data.tokenizer_fingerprint)

    def keep(self, size: int) -> KeptVocab:
        """The first ``size`` tokens; raises :class:`VocabError` outside ``[required, len(order)]``."""
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise VocabError(f"a vocabulary size must be a whole number, got {size!r}")
        if not self.required <= size <= len(self.order):
            raise VocabError(f"vocabulary size {size} is outside [{self.required}, {len(self.order)}]: the "
                             f"{self.required} required tokens (special and byte tokens) are the least a student "
                             "keeps, the teacher's vocabulary the most")
        return KeptVocab(self.order[:size].copy(), self.teacher_size, self.fingerprint)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (:meth:`from_dict` reads it back)."""
        return {"format": FORMAT, "order": self.order.tolist(), "required": self.required,
                "teacher_size": self.teacher_size, "style": self.style, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocabOrder:
        """The inverse of :meth:`to_dict`; raises :class:`VocabError` on another format."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise VocabError(f"not a vocabulary order ({FORMAT}); rebuild it with merge_order")
        order = np.asarray(data["order"], dtype=np.int64)
        return cls(order, int(data["required"]), int(data["teacher_size"]), str(data["style"]),
                   str(data["fingerprint"]))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the order as JSON, atomically."""
        return io.write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VocabOrder:
        """Read an order written by :meth:`save`."""
        import json

        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise VocabError(f"cannot read the vocabulary order {path} ({exc}); rebuild it with merge_order") from None


def special_names(tokenizer: Any, vocab: BpeVocab, roles: Iterable[str] | None = None) -> list[str]:
    """The special tokens a student must keep: ``roles`` (default: the tokenizer's BOS, EOS, UNK, PAD, ...;
    for a bare ``tokenizers.Tokenizer``, which knows no roles, all its special added tokens), the tokens its
    post-processor inserts and the BPE model's unknown token.

    Other special tokens (Gemma's 6,000 ``<unusedN>``, chat markers) are ordered by frequency like any token.
    """
    if roles is not None:
        names = list(roles)
    elif hasattr(tokenizer, "all_special_tokens"):
        names = [str(t) for t in tokenizer.all_special_tokens]
    else:
        names = [a.content for a in vocab.added if a.special]
    processor = vocab.data.get("post_processor") or {}
    for step in processor.get("processors", [processor]):
        for entry in (step.get("special_tokens") or {}).values():
            names.extend(entry.get("tokens", []))
    unk = vocab.data["model"].get("unk_token")
    return [*names, *([unk] if unk else [])]


def required_ids(tokenizer: Any, vocab: BpeVocab, specials: Iterable[str] | None = None) -> list[int]:
    """The ids every trimmed vocabulary keeps: special tokens (:func:`special_names`, ``specials`` as its
    roles) by id, then the byte tokens, then for byte fallback the characters its decoder rewrites."""
    ids = vocab.ids()
    names = special_names(tokenizer, vocab, specials)
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise VocabError(f"special token {unknown[0]!r} is not in the tokenizer's vocabulary; name existing tokens")
    out = list(dict.fromkeys(sorted(ids[n] for n in names)))
    rewrites = [ids[c] for c, _ in vocab.decoder_rewrites() if c in ids] if vocab.style == "byte_fallback" else []
    for i in [*vocab.base_ids(), *sorted(rewrites)]:
        if i not in out:
            out.append(i)
    return out


def merge_order(tokenizer: Any, counts: np.ndarray, specials: Iterable[str] | None = None) -> VocabOrder:
    """The merge-closed order of ``tokenizer``'s vocabulary by the corpus ``counts`` (see the module doc).

    ``counts`` is indexed by teacher id (:func:`token_counts`); ``specials`` replaces the tokenizer's roles
    among the required special tokens (:func:`special_names`).
    """
    vocab = read_bpe(tokenizer)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim == 1 and len(counts) > vocab.size and not counts[vocab.size:].any():
        counts = counts[: vocab.size]  # a padded tail no token can reach
    if counts.ndim != 1 or len(counts) > vocab.size or (len(counts) and counts.min() < 0):
        raise VocabError(f"token counts must be {vocab.size} non-negative numbers (one per teacher id), got shape "
                         f"{counts.shape}; count the data prepared with this tokenizer")
    parents = merge_parents(vocab)
    required = _closed(required_ids(tokenizer, vocab, specials), parents)
    priority = _priorities(np.pad(counts, (0, vocab.size - len(counts))), parents, vocab.tokens)
    named = np.array([bool(t) for t in vocab.tokens])
    rest = _topological(priority, parents, set(required), named)
    from headstart.data.fingerprint import tokenizer_fingerprint

    return VocabOrder(np.asarray(required + rest, dtype=np.int64), len(required), vocab.size, vocab.style,
                      tokenizer_fingerprint(tokenizer))


def _closed(ids: list[int], parents: np.ndarray) -> list[int]:
    """``ids`` with every ancestor added before the first token that needs it."""
    out: list[int] = []
    seen: set[int] = set()

    def visit(i: int) -> None:
        if i in seen:
            return
        for p in parents[i]:
            if p >= 0:
                visit(int(p))
        seen.add(i)
        out.append(i)

    for i in ids:
        visit(i)
    return out


def _priorities(counts: np.ndarray, parents: np.ndarray, tokens: list[str]) -> np.ndarray:
    """Each token's count raised to the largest count of anything built from it.

    A merge's parts are strictly shorter than its result, so visiting tokens longest first passes every
    count down to all ancestors.
    """
    priority = counts.copy()
    for child in sorted(np.flatnonzero(parents[:, 0] >= 0).tolist(), key=lambda i: -len(tokens[i])):
        for p in parents[child]:
            priority[p] = max(priority[p], priority[child])
    return priority


def _topological(priority: np.ndarray, parents: np.ndarray, placed: set[int], named: np.ndarray) -> list[int]:
    """The named tokens outside ``placed`` by descending priority (ties by id), each after its parents."""
    waiting = np.zeros(len(priority), dtype=np.int64)
    children: dict[int, list[int]] = {}
    for child in np.flatnonzero(parents[:, 0] >= 0).tolist():
        for p in set(parents[child].tolist()) - placed:
            waiting[child] += 1
            children.setdefault(p, []).append(child)
    heap = [(-int(priority[i]), i) for i in np.flatnonzero(named).tolist() if i not in placed and waiting[i] == 0]
    heapq.heapify(heap)
    out: list[int] = []
    while heap:
        _, i = heapq.heappop(heap)
        out.append(i)
        for c in children.get(i, []):
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(heap, (-int(priority[c]), c))
    return out
