"""Unusable spec files, search journals and teacher caches are refused in one line naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headstart.errors import CheckpointError, DataError, OutputError, SpecError
from headstart.searching.journal import Journal, read_journal
from headstart.spec import SubnetSpec
from headstart.training.teacher_cache import TeacherCache, build_cache


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# -- spec files ------------------------------------------------------------------------------------

SPEC_FAULTS = [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "binary data"),
    (b"spec: [unclosed", "not valid YAML/JSON"),
    (b"[" * 5000 + b"]" * 5000, "not valid YAML/JSON"),
    (b"just a string", "a spec must be a mapping"),
    (b"layers: 5\nhidden: [0]\nkv_groups: [[0]]\nheads: [[[0]]]\nmlp: [[0]]\n", "malformed spec"),
    (b"layers: [0.5]\nhidden: [0]\nkv_groups: [[0]]\nheads: [[[0]]]\nmlp: [[0]]\n", "layers must hold integers"),
    (b"layers: ['a']\nhidden: [0]\nkv_groups: [[0]]\nheads: [[[0]]]\nmlp: [[0]]\n", "layers must hold integers"),
    (b"layers: [0]\nhidden: null\nkv_groups: [[0]]\nheads: [[[0]]]\nmlp: [[0]]\n", "malformed spec"),
    (b"layers: [0]\nhidden: [0]\nkv_groups: [[0]]\nheads: [[[true]]]\nmlp: [[0]]\n", "heads must hold integers"),
    (b"layers: [0]\nhidden: [0]\nkv_groups: [[0]]\nheads: [[[0]]]\n", "spec is missing ['mlp']"),
    (b"{spec: {layers: [0], colour: red}}", "unknown spec key"),
]


@pytest.mark.parametrize(("content", "fragment"), SPEC_FAULTS, ids=[f"{i}-{f}" for i, (_, f) in enumerate(SPEC_FAULTS)])
def test_an_unusable_spec_file_is_one_line_naming_it(tmp_path, content, fragment):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as err:
        SubnetSpec.load(path)
    text = _one_line(err)
    assert fragment in text and str(path) in text


def test_a_good_spec_still_loads(tmp_path):
    spec = SubnetSpec((0,), (0, 1), ((0,),), (((0,),),), ((0, 1),))
    assert SubnetSpec.load(spec.save(tmp_path / "s.yaml")) == spec


# -- search journals -------------------------------------------------------------------------------

HEADER = {"teacher": "t", "data": "d", "space": "s", "seed": 7}
GOOD = {"run": "evolution/importance", "bin": 0, "spec_hash": "abc", "loss": 4.5}


@pytest.mark.parametrize(("content", "fragment"), [
    (bytes(range(256)) * 8, "binary data"),
    (b"", "is empty"),
    (b"garbage\n" + json.dumps(GOOD).encode() + b"\n", "bad first line"),
    (b'{"kind": "something-else"}\n', "bad first line"),
    (b'{"kind": "headstart-search-journal", "version": 99}\n', "has version 99"),
    (b"[" * 100000 + b"\n", "bad first line"),
])
def test_resume_over_an_unusable_journal_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as err:
        Journal(path, HEADER, resume=True)
    assert fragment in _one_line(err) and str(path) in str(err.value)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]  # nothing touched


def test_records_with_wrong_types_are_set_aside_not_replayed(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path, HEADER) as journal:
        journal.append(GOOD)
    bad = [{**GOOD, "loss": "4.5"}, {**GOOD, "bin": True}, {**GOOD, "bin": -1}, {**GOOD, "spec_hash": 3},
           {**GOOD, "run": None}, {**GOOD, "scored_flops": "many"}, [1, 2], "text"]
    with path.open("a") as fh:
        fh.write("".join(json.dumps(rec) + "\n" for rec in bad))
    _, records, skipped = read_journal(path)
    assert records == [GOOD] and len(skipped) == len(bad)
    with Journal(path, HEADER, resume=True) as journal:
        assert journal.records == [GOOD] and journal.skipped == len(bad)
    assert len((tmp_path / "journal.jsonl.corrupt").read_text().splitlines()) == len(bad)


def test_a_journal_that_is_a_link_is_refused(tmp_path):
    outside = tmp_path / "outside.jsonl"
    with Journal(outside, HEADER):
        pass
    before = outside.read_bytes()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "journal.jsonl").symlink_to(outside)
    with pytest.raises(OutputError, match="symbolic link") as err:
        Journal(tmp_path / "out" / "journal.jsonl", HEADER, resume=True)
    _one_line(err)
    assert outside.read_bytes() == before


# -- teacher caches --------------------------------------------------------------------------------


def _cached_windows() -> torch.Tensor:
    from train_support import VOCAB

    return torch.randint(0, VOCAB, (6, 9), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def cache(tmp_path):
    from train_support import VOCAB, confident_teacher

    windows = _cached_windows()
    return build_cache(confident_teacher(), [windows[:3], windows[3:]], tmp_path / "cache", k=4, vocab=VOCAB,
                       seq_len=8, meta={"teacher_fingerprint": "t"}, shard_windows=4)


def _edit(cache, edit):
    meta = json.loads((cache / "cache.json").read_text())
    edit(meta)
    (cache / "cache.json").write_text(json.dumps(meta))


CACHE_FAULTS = [
    (lambda m: m.update(k=0), "k is 0"),
    (lambda m: m.update(seq_len="8"), "seq_len is '8'"),
    (lambda m: m.update(vocab=None), "vocab is None"),
    (lambda m: m.update(windows=7), "windows is 7 but the shards hold 6"),
    (lambda m: m.update(index_dtype="<f8"), "index_dtype is '<f8'"),
    (lambda m: m.update(shards={}), "shards is not a list"),
    (lambda m: m["shards"][0].update(windows=0), "shards[0].windows is 0"),
    (lambda m: m["shards"][1]["files"].pop("rest"), "shards[1].files must name a file and sha256"),
    (lambda m: m["shards"][0]["files"]["logp"].update(sha256=None), "shards[0].files"),
]


@pytest.mark.parametrize(("edit", "fragment"), CACHE_FAULTS, ids=[f for _, f in CACHE_FAULTS])
def test_a_malformed_cache_manifest_is_one_line(cache, edit, fragment):
    _edit(cache, edit)
    with pytest.raises(DataError) as err:
        TeacherCache(cache)
    assert fragment in _one_line(err) and str(cache / "cache.json") in str(err.value)


def test_a_binary_cache_manifest_is_one_line(cache):
    (cache / "cache.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="is not a teacher cache") as err:
        TeacherCache(cache)
    _one_line(err)


def test_a_cache_array_of_another_shape_is_refused_even_with_a_matching_checksum(cache):
    from headstart.io import sha256_file

    path = cache / "00000.rest.npy"
    np.save(path, np.zeros((4, 5), dtype=np.float32))  # 5 positions per window instead of 8
    _edit(cache, lambda m: m["shards"][0]["files"]["rest"].update(sha256=sha256_file(path)))
    with pytest.raises(DataError, match=r"holds float32\[4, 5\], its manifest implies float32\[4, 8\]") as err:
        TeacherCache(cache).lookup(_cached_windows()[:1])
    _one_line(err)


def test_a_cache_array_that_is_not_npy_is_refused(cache):
    from headstart.io import sha256_file

    path = cache / "00000.keys.npy"
    path.write_bytes(b"not an npy file at all")
    _edit(cache, lambda m: m["shards"][0]["files"]["keys"].update(sha256=sha256_file(path)))
    with pytest.raises(DataError, match="is not a readable array") as err:
        TeacherCache(cache)
    _one_line(err)
