"""The offline teacher cache: exactness at k = vocabulary, keys, tampering, size."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from train_support import (  # noqa: F401 (one_thread is an autouse fixture)
    VOCAB,
    StandInLoader,
    confident_teacher,
    config,
    one_thread,
    out_dir,
    tiny_llama,
    token_stream,
)

from headstart.errors import DataError
from headstart.training.loop import Trainer
from headstart.training.teacher_cache import TeacherCache, build_cache, bytes_per_token

SEQ = 16


def _windows(stream: np.ndarray) -> torch.Tensor:
    return StandInLoader(stream, SEQ, 1).windows


def _cache(tmp_path, teacher, stream, k, name="cache"):
    windows = _windows(stream)
    batches = [windows[i:i + 5] for i in range(0, len(windows), 5)]
    return build_cache(teacher, batches, tmp_path / name, k=k, vocab=VOCAB, seq_len=SEQ,
                       meta={"teacher_fingerprint": "t", "data_fingerprint": "d"}, shard_windows=16)


def _run(cfg, root, teacher=None, cache=None):
    stream = token_stream(3000)
    student = tiny_llama(1)
    loader = StandInLoader(stream, SEQ, cfg.batch_size, seed=cfg.seed)
    trainer = Trainer(cfg, student, loader, out=out_dir(root), val_windows=None, vocab=VOCAB, teacher=teacher,
                      cache=cache)
    trainer.fit()
    rows = [json.loads(line) for line in open(os.path.join(out_dir(root), "metrics.jsonl"))]
    return student, rows


@pytest.mark.parametrize("kind", ["forward", "jsd"])
def test_cached_training_matches_online_when_k_is_the_vocabulary(tmp_path, kind):
    teacher = confident_teacher()
    cache = TeacherCache(_cache(tmp_path, teacher, token_stream(3000), k=VOCAB))
    cfg = config(tmp_path, tokens=10 * 2 * SEQ, kd={"kind": kind, "alpha": 0.3, "temperature": 2.0})
    online, rows_on = _run(cfg, tmp_path / "online", teacher=teacher)
    cached, rows_c = _run(cfg, tmp_path / "cached", cache=cache)
    loss_on, loss_c = np.array([r["loss"] for r in rows_on]), np.array([r["loss"] for r in rows_c])
    np.testing.assert_allclose(loss_c, loss_on, rtol=2e-3, atol=1e-4)  # fp16 storage of the log-probs
    assert rows_c[-1]["teacher_tokens"] == 0 and rows_on[-1]["teacher_tokens"] == rows_on[-1]["tokens"]
    # Adam normalises updates, so fp16 noise on a near-zero gradient can move a lone element by ~lr
    for (name, a), b in zip(online.state_dict().items(), cached.state_dict().values()):
        diff = (a - b).abs()
        assert diff.max() < 1e-2 and diff.mean() < 1e-4, (name, float(diff.max()), float(diff.mean()))


def test_small_k_differs_from_online_but_trains(tmp_path):
    teacher = confident_teacher()
    cache = TeacherCache(_cache(tmp_path, teacher, token_stream(3000), k=4))
    cfg = config(tmp_path, tokens=10 * 2 * SEQ, kd={"kind": "forward", "alpha": 0.0})
    _, rows_on = _run(cfg, tmp_path / "online", teacher=teacher)
    _, rows_c = _run(cfg, tmp_path / "cached", cache=cache)
    assert rows_c[-1]["kd"] < rows_c[0]["kd"]
    assert abs(rows_c[0]["kd"] - rows_on[0]["kd"]) > 1e-3  # top-4 buckets are a coarser divergence


def test_cache_is_keyed_to_tokens_and_checked(tmp_path):
    teacher = tiny_llama(7, hidden=48)
    stream = token_stream(3000)
    path = _cache(tmp_path, teacher, stream, k=8)
    cache = TeacherCache(path)
    windows = _windows(stream)
    assert len(cache) == len(torch.unique(windows, dim=0))
    got = cache.lookup(windows[[3, 0]])
    assert got.logp.shape == (2 * SEQ, 8) and got.logp.dtype == torch.float16
    # the record of window 3 is the teacher's top-8 on window 3's tokens
    with torch.no_grad():
        lp = torch.log_softmax(teacher(windows[3:4, :-1]).logits.float(), -1)[0]
    torch.testing.assert_close(got.logp[:SEQ].float(), lp.topk(8).values, atol=2e-3, rtol=1e-3)
    assert torch.equal(got.index[:SEQ], lp.topk(8).indices)
    rest = torch.log1p(-lp.topk(8).values.exp().sum(-1).clamp(max=1 - 1e-7))
    torch.testing.assert_close(got.log_rest[:SEQ], rest, atol=1e-4, rtol=1e-4)
    # a window whose tokens are not in the cache is refused
    other = windows[:2].clone()
    other[1, 5] = (other[1, 5] + 1) % VOCAB
    with pytest.raises(DataError, match="window 1 of the batch .* not in the teacher cache"):
        cache.lookup(other)
    with pytest.raises(DataError, match="seq_len 16, this run has 32"):
        cache.check(seq_len=32, vocab=VOCAB)
    with pytest.raises(DataError, match="teacher_fingerprint"):
        cache.check(seq_len=SEQ, vocab=VOCAB, teacher_fingerprint="another")
    cache.check(seq_len=SEQ, vocab=VOCAB, data_fingerprint="d", teacher_fingerprint="t")


def test_tampered_cache_is_refused(tmp_path):
    teacher = tiny_llama(7, hidden=48)
    stream = token_stream(3000)
    path = _cache(tmp_path, teacher, stream, k=8)
    shard = path / "00001.logp.npy"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x40  # one flipped bit in a stored log-prob
    shard.write_bytes(bytes(data))
    cache = TeacherCache(path)
    windows = _windows(stream)
    cache.lookup(windows[:2])  # shard 0 is intact
    with pytest.raises(DataError, match="00001.logp.npy is missing or was modified"):
        cache.lookup(windows[16:18])
    # swapping the keys of two records (logits replayed to the wrong inputs) is refused too
    keys = path / "00000.keys.npy"
    arr = np.load(keys)
    arr[[0, 1]] = arr[[1, 0]]
    np.save(keys, arr)
    with pytest.raises(DataError, match="00000.keys.npy is missing or was modified"):
        TeacherCache(path)
    # a training run on data the cache does not hold stops at its first batch
    cfg = config(tmp_path, tokens=4 * 2 * SEQ)
    student = tiny_llama(1)
    loader = StandInLoader(token_stream(3000, seed=9), SEQ, 2)
    fresh = TeacherCache(_cache(tmp_path, teacher, stream, k=8, name="fresh"))
    with pytest.raises(DataError, match="not in the teacher cache"):
        Trainer(cfg, student, loader, out=out_dir(tmp_path), val_windows=None, vocab=VOCAB, cache=fresh).fit()


def test_cache_size_per_token(tmp_path):
    assert bytes_per_token(64, 49152, 512) < 300
    assert bytes_per_token(64, 49152, 512) == pytest.approx(260 + 16 / 512)
    assert bytes_per_token(64, 100_000, 512) == pytest.approx(64 * 6 + 4 + 16 / 512)
    path = _cache(tmp_path, tiny_llama(7, hidden=48), token_stream(3000), k=8)
    meta = json.loads((path / "cache.json").read_text())
    size = sum(f.stat().st_size for f in path.glob("*.npy"))
    per_token = size / (meta["windows"] * SEQ)
    assert meta["bytes_per_token"] <= per_token < meta["bytes_per_token"] + 40  # + .npy headers
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary directory left
