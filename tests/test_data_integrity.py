"""What a prepared directory records is verified: shard checksums, manifest fields, links inside --out."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from tiny import TEXT, tiny_tokenizer

from headstart.data import TokenStream, open_split, prepare, prepare_corpus, read_manifest
from headstart.data.loader import WindowLoader, fixed_windows
from headstart.data.verify import forget_verified
from headstart.errors import DataError, OutputError


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("prep")
    (root / "in").mkdir()
    for i in range(12):
        (root / "in" / f"d{i}.txt").write_text(f"doc {i} " + TEXT * 2)
    return prepare([root / "in"], tok, root / "out", tokenizer_source="t", workers=1, shard_tokens=300,
                   search_frac=2, val_frac=2)


@pytest.fixture
def copy(prepared, tmp_path):
    forget_verified()
    path = tmp_path / "data"
    shutil.copytree(prepared, path)
    yield path
    forget_verified()


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _edit_manifest(path, edit):
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _flip(path, offset=1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("reader", [
    lambda d: TokenStream(d, "train"),
    lambda d: open_split(d, "train"),
    lambda d: WindowLoader(d, "train", seq_len=8, batch_size=2),
    lambda d: fixed_windows(d, "train", seq_len=8, n=2),
], ids=["stream", "open_split", "loader", "fixed_windows"])
def test_a_flipped_byte_in_a_shard_is_refused_by_every_reader(copy, reader):
    shard = copy / read_manifest(copy)["splits"]["train"]["shards"][1]["file"]
    _flip(shard)
    with pytest.raises(DataError) as err:
        reader(copy)
    text = _one_line(err)
    assert str(shard) in text and "sha256" in text and "prepare --overwrite" in text


def test_a_shard_is_read_once_per_process(copy):
    shard = copy / read_manifest(copy)["splits"]["train"]["shards"][0]["file"]
    TokenStream(copy, "train")
    stat = shard.stat()
    _flip(shard)  # same size; the modification time put back: only a re-read would notice
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    TokenStream(copy, "train")  # verified already in this process: not read again
    forget_verified()
    with pytest.raises(DataError, match="sha256"):
        TokenStream(copy, "train")
    assert TokenStream(copy, "train", verify=False)  # verification can be skipped by a caller that knows


MANIFEST_FAULTS = [
    (lambda m: m.update(dtype="float64"), "dtype is 'float64'"),
    (lambda m: m.update(dtype="uint32"), r"dtype is uint32 but a vocabulary of \d+ is stored as uint16"),
    (lambda m: m.update(vocab_size=-3), "vocab_size is -3"),
    (lambda m: m.update(vocab_size="512"), "vocab_size is '512'"),
    (lambda m: m.update(vocab_size=600), r"vocab_size is 600 but the tokenizer entry records \d+"),
    (lambda m: m.update(eos_id=9999), "eos_id is 9999"),
    (lambda m: m.update(eos_id=3), r"eos_id is 3 but the tokenizer entry records \d+"),
    (lambda m: m.update(total_tokens=5), "total_tokens is 5"),
    (lambda m: m["splits"]["val"].update(tokens=1), "splits.val.tokens is 1"),
    (lambda m: m["splits"]["train"]["shards"][0].update(tokens=-1), r"splits.train.shards\[0\].tokens is -1"),
    (lambda m: m["splits"]["train"]["shards"][0].update(sha256="abc"), r"splits.train.shards\[0\].sha256"),
    (lambda m: m["splits"]["train"]["shards"][0].pop("file"), r"splits.train.shards\[0\] names no file"),
    (lambda m: m["splits"]["search"].update(shards={}), "splits.search.shards is not a list"),
    (lambda m: m.update(tokenizer="x"), "tokenizer has no fingerprint"),
    (lambda m: m.update(splits=[]), r"lacks the split\(s\)"),
]


@pytest.mark.parametrize(("edit", "fragment"), MANIFEST_FAULTS, ids=[f for _, f in MANIFEST_FAULTS])
def test_a_malformed_or_inconsistent_manifest_is_one_line(copy, edit, fragment):
    _edit_manifest(copy, edit)
    with pytest.raises(DataError) as err:
        read_manifest(copy)
    text = _one_line(err)
    assert re.search(fragment, text) and str(copy / "manifest.json") in text
    with pytest.raises(DataError):
        WindowLoader(copy, "train", seq_len=8, batch_size=2)


def test_a_vocabulary_shrunk_consistently_is_caught_by_the_ids(copy):
    def shrink(m):
        m["vocab_size"] = m["tokenizer"]["vocab_size"] = 100

    _edit_manifest(copy, shrink)
    read_manifest(copy)  # the fields agree with each other
    with pytest.raises(DataError, match=r"holds token id \d+, outside the manifest's vocabulary of 100") as err:
        TokenStream(copy, "train")
    _one_line(err)


def test_an_eos_changed_consistently_is_caught_by_the_stream_end(copy):
    def other_eos(m):
        m["eos_id"] = m["tokenizer"]["eos_id"] = 1

    _edit_manifest(copy, other_eos)
    with pytest.raises(DataError, match="does not end with the manifest's EOS id 1") as err:
        TokenStream(copy, "val")
    _one_line(err)


def test_fields_altered_together_are_caught_against_the_tokenizer(copy, tok):
    from headstart.data import check_tokenizer

    check_tokenizer(copy, tok)

    def other_eos(m):
        m["eos_id"] = m["tokenizer"]["eos_id"] = 1

    _edit_manifest(copy, other_eos)
    with pytest.raises(DataError, match="records eos_id 1 but its tokenizer has 0") as err:
        check_tokenizer(copy, tok)
    _one_line(err)


def test_a_binary_manifest_is_one_line(copy):
    (copy / "manifest.json").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="is corrupt") as err:
        read_manifest(copy)
    _one_line(err)


def test_prepare_does_not_reuse_a_damaged_directory(copy, tok, caplog):
    manifest = read_manifest(copy)
    src = [s["input"] for s in manifest["sources"]]
    shard = copy / manifest["splits"]["train"]["shards"][0]["file"]
    _flip(shard)
    result = prepare_corpus(src, tok, copy, tokenizer_source="t", workers=1, shard_tokens=300, search_frac=2,
                            val_frac=2)
    assert not result.reused and "preparing" in caplog.text and "sha256" in caplog.text
    assert result.manifest["splits"] == manifest["splits"]
    TokenStream(copy, "train")


def test_a_split_folder_that_is_a_link_is_refused_and_nothing_outside_changes(tmp_path, tok, prepared):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.bin").write_bytes(b"keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "train").symlink_to(elsewhere, target_is_directory=True)
    src = [s["input"] for s in read_manifest(prepared)["sources"]]
    with pytest.raises(OutputError) as err:
        prepare(src, tok, out, tokenizer_source="t", workers=1, search_frac=2, val_frac=2)
    text = _one_line(err)
    assert f"{out / 'train'} inside --out" in text and "symbolic link" in text
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.bin"]
    assert sorted(p.name for p in out.iterdir()) == ["train"]


def test_a_shard_that_is_a_link_is_refused(copy, tok, tmp_path):
    manifest = read_manifest(copy)
    shard = copy / manifest["splits"]["val"]["shards"][0]["file"]
    outside = tmp_path / "outside.bin"
    shutil.move(shard, outside)
    shard.symlink_to(outside)
    src = [s["input"] for s in manifest["sources"]]
    with pytest.raises(OutputError, match="symbolic link"):
        prepare(src, tok, copy, tokenizer_source="t", workers=1, shard_tokens=300, search_frac=2, val_frac=2,
                overwrite=True)
    assert outside.is_file() and np.fromfile(outside, dtype=np.uint16).size > 0
