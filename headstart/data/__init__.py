"""Data: corpora tokenized with the teacher's tokenizer into packed token shards, and their loaders.

``prepare`` writes a directory (``manifest.json`` + ``train/``, ``search/``, ``val/`` shards);
``open_split``, ``WindowLoader`` and ``fixed_windows`` read it; ``check_tokenizer`` and
``check_vocab`` guard against reading tokens through another vocabulary. The torch-based loader is
imported on first use, so worker processes that only tokenize stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from headstart.data.builtin import builtin_corpus
from headstart.data.fingerprint import check_tokenizer, check_vocab, tokenizer_fingerprint, tokenizer_vocab_size
from headstart.data.prepare import Prepared, prepare, prepare_corpus
from headstart.data.shards import SPLITS, TokenStream, open_split, read_manifest

if TYPE_CHECKING:
    from headstart.data.loader import WindowLoader, fixed_windows

__all__ = [
    "SPLITS",
    "Prepared",
    "TokenStream",
    "WindowLoader",
    "builtin_corpus",
    "check_tokenizer",
    "check_vocab",
    "fixed_windows",
    "open_split",
    "prepare",
    "prepare_corpus",
    "read_manifest",
    "tokenizer_fingerprint",
    "tokenizer_vocab_size",
]


def __getattr__(name: str) -> Any:
    if name in ("WindowLoader", "fixed_windows"):
        from headstart.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'headstart.data' has no attribute {name!r}")
