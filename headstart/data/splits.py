"""Which documents go to ``train``, ``search`` and ``val``: a seeded choice of whole documents.

A held-out size is a fraction of the documents (``0 <= x < 1``; a positive fraction keeps at least
one document) or a whole number of documents (``x >= 1``). The choice depends only on the number
of documents, the two sizes and the seed, so a resumed run assigns every document the same way.
"""

from __future__ import annotations

import numpy as np

from headstart.errors import ConfigError, DataError

DEFAULT_SEARCH = 0.02
DEFAULT_VAL = 0.02


def held_out_count(value: float, n_docs: int, what: str) -> int:
    """Documents held out for one split, from a fraction or a count."""
    if value < 0 or (value >= 1 and float(value) != int(value)):
        raise ConfigError(f"--{what}-frac {value} must be a fraction in [0, 1) or a whole number of documents")
    if value >= 1:
        return int(value)
    return 0 if value == 0 else max(1, round(value * n_docs))


def parse_split_fractions(text: str) -> tuple[float, float]:
    """``"TRAIN,SEARCH,VAL"`` fractions (summing to 1) -> ``(search, val)``."""
    try:
        parts = [float(x) for x in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise ConfigError(
            f"--split-fractions {text!r} must be three fractions TRAIN,SEARCH,VAL summing to 1, e.g. 0.96,0.02,0.02"
        )
    return parts[1], parts[2]


class SplitAssignment:
    """The split of every document index: held-out indices are stored, the rest is ``train``."""

    def __init__(self, n_docs: int, n_search: int, n_val: int, seed: int):
        if n_search + n_val >= n_docs:
            raise DataError(
                f"the inputs hold {n_docs} documents, too few to hold out {n_search} for search and {n_val} for val "
                "and keep any for train; add documents (e.g. JSONL with one document per line) or lower "
                "--search-frac/--val-frac"
            )
        self.n_docs, self.n_search, self.n_val = n_docs, n_search, n_val
        chosen = np.random.default_rng(seed).choice(n_docs, n_search + n_val, replace=False)
        self._split = {int(i): "search" for i in chosen[:n_search]}
        self._split.update({int(i): "val" for i in chosen[n_search:]})

    def __call__(self, index: int) -> str:
        return self._split.get(index, "train")

    def counts(self) -> dict[str, int]:
        """Documents assigned to each split."""
        return {"train": self.n_docs - self.n_search - self.n_val, "search": self.n_search, "val": self.n_val}
