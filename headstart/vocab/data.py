"""The student's data: the teacher's prepared corpus tokenized again with the trimmed tokenizer.

:func:`prepare_like` reruns ``prepare`` on the same inputs with the same options (seed, held-out sizes,
text field, shard size), so every document lands in the same split as in the teacher's directory; it
checks that the inputs are unchanged (their sha256) and that the splits hold the same documents.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headstart.errors import DataError


def prepare_like(teacher_data: str | os.PathLike[str], tokenizer: Any, out_dir: str | os.PathLike[str], *,
                 tokenizer_source: str, inputs: Sequence[str] | None = None, workers: int | None = None,
                 overwrite: bool = False) -> Path:
    """Tokenize the corpus of the prepared ``teacher_data`` again with ``tokenizer`` into ``out_dir``.

    ``inputs`` defaults to the inputs the manifest records (relative paths are read from the current
    directory). Raises :class:`DataError` when an input changed since, or the splits differ.
    """
    from headstart.data import prepare_corpus, read_manifest

    manifest = read_manifest(teacher_data)
    split = manifest["split_settings"]
    names = list(inputs) if inputs is not None else [s["input"] for s in manifest["sources"]]
    prepared = prepare_corpus(
        names, tokenizer, out_dir, tokenizer_source=tokenizer_source, text_field=manifest["text_field"],
        search_frac=split["search"], val_frac=split["val"], seed=split["seed"], workers=workers,
        shard_tokens=manifest["shard_tokens"], max_doc_bytes=manifest["max_doc_bytes"], overwrite=overwrite,
    )
    _check_same_corpus(manifest, prepared.manifest, teacher_data)
    return prepared.path


def _check_same_corpus(teacher: dict[str, Any], student: dict[str, Any], where: Any) -> None:
    have = [s["sha256"] for s in teacher["sources"]]
    got = [s["sha256"] for s in student["sources"]]
    if have != got:
        raise DataError(f"the inputs of {where} changed since it was prepared (their sha256 differ); prepare the "
                        "teacher's data again from the current inputs")
    for name in ("train", "search", "val"):
        a, b = teacher["splits"][name], student["splits"][name]
        if a["documents"] != b["documents"] or a.get("names") != b.get("names"):
            raise DataError(f"split {name!r} holds other documents than in {where}; prepare both with the same "
                            "inputs and options")
