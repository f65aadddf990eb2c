"""WindowLoader and fixed_windows: determinism, rank disjointness, exact resume, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import TEXT, tiny_tokenizer

from headstart.data import WindowLoader, fixed_windows, open_split, prepare
from headstart.errors import ConfigError, DataError

SEQ = 15  # windows of 16 tokens


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    (root / "in").mkdir()
    for i in range(24):
        (root / "in" / f"d{i:02d}.txt").write_text(f"Document number {i}. " + TEXT[: 80 + 31 * i])
    return prepare(
        [root / "in"],
        tiny_tokenizer(),
        root / "out",
        tokenizer_source="tiny",
        workers=1,
        shard_tokens=500,
        search_frac=3,
        val_frac=3,
    )


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def keys(batch: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in batch]


def test_windows_are_the_streams_chunks(data_dir):
    loader = WindowLoader(data_dir, "train", SEQ, 4, seed=1)
    stream = np.asarray(open_split(data_dir, "train")).astype(np.int64)
    assert loader.windows_per_epoch == len(stream) // (SEQ + 1)
    chunks = {stream[i * 16 : (i + 1) * 16].tobytes() for i in range(loader.windows_per_epoch)}
    batch = next(iter(loader))
    assert batch.dtype == torch.long and batch.shape == (4, SEQ + 1)
    assert set(keys(batch)) <= chunks


def test_deterministic_for_a_seed_and_different_across_seeds(data_dir):
    a = take(WindowLoader(data_dir, "train", SEQ, 4, seed=7), 5)
    b = take(WindowLoader(data_dir, "train", SEQ, 4, seed=7), 5)
    c = take(WindowLoader(data_dir, "train", SEQ, 4, seed=8), 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_an_epoch_visits_every_window_once_and_reshuffles(data_dir):
    loader = WindowLoader(data_dir, "train", SEQ, 1, seed=3)
    n = loader.windows_per_epoch
    ids = loader.window_ids(0, 2 * n)
    first, second = ids[:n], ids[n:]
    assert sorted(first) == sorted(second) == list(range(n)) and list(first) != list(second)
    batches = take(loader, 2 * n)
    assert torch.equal(torch.cat(batches), loader.read_windows(ids))
    assert loader.epoch == 2 and loader.position == 2 * n


def test_sequential_epochs_follow_the_stream(data_dir):
    loader = WindowLoader(data_dir, "val", SEQ, 2, shuffle=False, epochs=1)
    stream = np.asarray(open_split(data_dir, "val")).astype(np.int64)
    got = np.concatenate([b.reshape(-1).numpy() for b in loader])
    steps = loader.windows_per_epoch // 2
    np.testing.assert_array_equal(got, stream[: steps * 2 * (SEQ + 1)])
    assert list(loader) == []  # the single epoch is used up


def test_two_ranks_are_disjoint_and_cover_the_single_rank_batch(data_dir):
    single = take(WindowLoader(data_dir, "train", SEQ, 6, seed=5), 4)
    r0 = take(WindowLoader(data_dir, "train", SEQ, 3, seed=5, rank=0, world_size=2), 4)
    r1 = take(WindowLoader(data_dir, "train", SEQ, 3, seed=5, rank=1, world_size=2), 4)
    for s, a, b in zip(single, r0, r1):
        assert not set(keys(a)) & set(keys(b))
        assert torch.equal(torch.cat([a, b]), s)


def test_resume_mid_epoch_gives_exactly_the_same_windows(data_dir):
    full = WindowLoader(data_dir, "train", SEQ, 4, seed=11)
    n_steps = full.windows_per_epoch // 4 + 3  # runs across an epoch boundary
    expected = take(full, n_steps)
    first = WindowLoader(data_dir, "train", SEQ, 4, seed=11)
    take(first, 5)
    state = first.state_dict()
    resumed = WindowLoader(data_dir, "train", SEQ, 4, seed=11)
    resumed.load_state_dict(state)
    rest = take(resumed, n_steps - 5)
    assert all(torch.equal(x, y) for x, y in zip(expected[5:], rest))
    # the same state means the same for every rank: two ranks resume to the two halves
    halves = []
    for rank in range(2):
        loader = WindowLoader(data_dir, "train", SEQ, 2, seed=11, rank=rank, world_size=2)
        loader.load_state_dict(state)
        halves.append(next(iter(loader)))
    assert torch.equal(torch.cat(halves), expected[5])


def test_state_of_other_data_or_options_is_refused(data_dir):
    state = WindowLoader(data_dir, "train", SEQ, 4, seed=1).state_dict()
    with pytest.raises(DataError, match="seed"):
        WindowLoader(data_dir, "train", SEQ, 4, seed=2).load_state_dict(state)
    with pytest.raises(DataError, match="seq_len"):
        WindowLoader(data_dir, "train", SEQ + 1, 4, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match="position"):
        WindowLoader(data_dir, "train", SEQ, 4, seed=1).load_state_dict({**state, "position": -1})


def test_fixed_windows(data_dir):
    a = fixed_windows(data_dir, "search", SEQ, 5, seed=0)
    assert a.shape == (5, SEQ + 1) and a.dtype == torch.long
    assert torch.equal(a, fixed_windows(data_dir, "search", SEQ, 5, seed=0))
    assert not torch.equal(a, fixed_windows(data_dir, "search", SEQ, 5, seed=1))
    assert len(set(keys(a))) == 5
    n_tokens = len(open_split(data_dir, "search"))
    with pytest.raises(DataError) as exc:
        fixed_windows(data_dir, "search", 255, 1000)
    assert f"has {n_tokens} tokens" in str(exc.value) and "needs 256000" in str(exc.value)


def test_bad_arguments(data_dir):
    with pytest.raises(ConfigError):
        WindowLoader(data_dir, "train", 0, 4)
    with pytest.raises(ConfigError):
        WindowLoader(data_dir, "train", SEQ, 4, rank=2, world_size=2)
    with pytest.raises(DataError, match="unknown split"):
        WindowLoader(data_dir, "test", SEQ, 4)
    with pytest.raises(DataError, match="one window"):
        WindowLoader(data_dir, "val", 100_000, 1)


def test_truncated_shard_is_detected(tmp_path, data_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    shard = sorted((copy / "train").glob("*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated"):
        open_split(copy, "train")


def test_prefetching_hands_out_the_same_batches_and_state(data_dir):
    plain = WindowLoader(data_dir, "train", SEQ, 3, seed=5, prefetch=0)
    ahead = WindowLoader(data_dir, "train", SEQ, 3, seed=5, prefetch=3)
    assert all(torch.equal(x, y) for x, y in zip(take(plain, 6), take(ahead, 6)))
    assert ahead.state_dict() == plain.state_dict()  # read-ahead does not move the position
    it = iter(ahead)
    first = next(it)
    ahead.load_state_dict(plain.state_dict() | {"position": 0})  # moved while reads are in flight
    assert torch.equal(next(it), take(WindowLoader(data_dir, "train", SEQ, 3, seed=5), 1)[0])
    assert ahead.position == 3 and first.shape == (3, SEQ + 1)
    bounded = WindowLoader(data_dir, "val", SEQ, 2, shuffle=False, epochs=1, prefetch=2)
    assert len(list(bounded)) == bounded.windows_per_epoch // 2  # no read past the last epoch
    with pytest.raises(ConfigError, match="prefetch"):
        WindowLoader(data_dir, "train", SEQ, 3, prefetch=-1)
