"""Calibration tokens for the importance pass: from a prepared data directory, text files, or the
builtin corpus, as ``[N, seq_len]`` windows chosen with a seed."""

from __future__ import annotations

from pathlib import Path

import torch

from headstart.errors import DataError


def calibration_tokens(
    source: str, tokenizer: object, n: int = 64, seq_len: int = 256, seed: int = 0
) -> torch.Tensor:
    """``n`` windows of ``seq_len`` tokens from ``source``.

    ``source`` is a directory prepared by ``headstart prepare`` (its ``train`` split is used; its
    tokenizer must be the teacher's), or anything ``prepare`` reads (text files and directories, JSONL,
    Parquet, ``hf:NAME``, ``builtin:shakespeare``; several comma-separated), tokenized with the teacher's
    tokenizer.
    """
    if n < 1 or seq_len < 2:
        raise DataError(f"calibration needs at least 1 sequence of 2 tokens, got n={n}, seq_len={seq_len}")
    path = Path(source)
    if path.is_dir() and (path / "manifest.json").is_file():
        from headstart.data import check_tokenizer, fixed_windows

        if tokenizer is not None:
            check_tokenizer(path, tokenizer)
        return fixed_windows(path, "train", seq_len - 1, n, seed=seed)
    if tokenizer is None:
        raise DataError("the teacher has no tokenizer, so text cannot be tokenized; pass a prepared data directory")
    texts = _texts(source)
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    stream = torch.tensor(ids, dtype=torch.long)
    if stream.numel() < seq_len:
        raise DataError(f"calibration text {source} has {stream.numel()} tokens, fewer than one window of {seq_len}")
    starts = torch.randint(0, stream.numel() - seq_len + 1, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.stack([stream[s:s + seq_len] for s in starts.tolist()])


def _texts(source: str) -> list[str]:
    """The documents of ``source``: anything ``headstart prepare`` reads (files, directories, globs, JSONL,
    Parquet, ``hf:NAME``, ``builtin:shakespeare``), several comma-separated."""
    from headstart.data.sources import iter_documents, resolve_inputs

    return [text for src in resolve_inputs([p for p in source.split(",") if p]) for _, text in
            iter_documents(src, "text")]
