"""prepare on bad input: each case gives one clear line (error or warning) and loses nothing."""

from __future__ import annotations

import errno
import json

import pytest
from tiny import TEXT, tiny_tokenizer

from headstart.data import open_split, prepare, read_manifest
from headstart.data import shards as shards_mod
from headstart.errors import DataError
from headstart.io import is_temp_name


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def corpus(root, n=8):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"d{i}.txt").write_text(f"doc {i} " + TEXT[: 60 + 17 * i])
    return root


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path, tok):
    with pytest.raises(DataError) as exc:
        prepare([tmp_path / "nope.txt"], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    assert "nope.txt does not exist" in one_line(exc)
    with pytest.raises(DataError, match="no supported files match"):
        prepare([str(tmp_path / "*.jsonl")], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="unsupported type"):
        prepare([tmp_path / "x.csv"], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    assert not (tmp_path / "out").exists()


def test_empty_input(tmp_path, tok):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.jsonl").write_text("\n\n")
    with pytest.raises(DataError) as exc:
        prepare([tmp_path / "a.txt", tmp_path / "b.jsonl"], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    assert "empty" in one_line(exc)
    (tmp_path / "c.jsonl").write_text('{"text": ""}\n{"text": ""}\n{"text": ""}\n{"text": ""}\n')
    with pytest.raises(DataError, match="no text"):
        prepare(
            [tmp_path / "c.jsonl"], tok, tmp_path / "out2", tokenizer_source="t", workers=1, search_frac=1, val_frac=1
        )
    assert not (tmp_path / "out2" / "manifest.json").exists()


def test_empty_file_among_others_is_a_warning(tmp_path, tok, caplog):
    corpus(tmp_path / "in")
    (tmp_path / "in" / "empty.txt").write_text("")
    with caplog.at_level("WARNING"):
        m = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "out", tokenizer_source="t", workers=1))
    assert "empty.txt is empty" in caplog.text
    assert m["empty_documents"] == 1 and m["documents"] == 9


def test_undecodable_bytes_are_replaced_and_counted(tmp_path, tok, caplog):
    root = corpus(tmp_path / "in")
    (root / "bad.txt").write_bytes(b"good start \xff\xfe middle \xc3 end")
    with caplog.at_level("WARNING"):
        out = prepare([root], tok, tmp_path / "out", tokenizer_source="t", workers=1, search_frac=1, val_frac=1)
    m = read_manifest(out)
    assert m["replaced"] == 3
    assert [s["replaced"] for s in m["sources"] if s["input"].endswith("bad.txt")] == [3]
    assert "replaced 3 undecodable byte sequences" in caplog.text
    text = "".join(tok.decode(open_split(out, s).tolist()) for s in ("train", "search", "val"))
    assert "good start \ufffd\ufffd middle \ufffd end" in text


def test_jsonl_line_without_the_text_field(tmp_path, tok):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n\n" + json.dumps({"content": "oops", "id": 2}) + "\n")
    with pytest.raises(DataError) as exc:
        prepare([path], tok, tmp_path / "out", tokenizer_source="t", workers=1, search_frac=0, val_frac=0)
    msg = one_line(exc)
    assert f"{path}:3" in msg and "'text'" in msg and "content, id" in msg and "--text-field" in msg
    path.write_text('{"text": "fine"}\n{"text": "broken\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: not valid JSON"):
        prepare([path], tok, tmp_path / "out", tokenizer_source="t", workers=1, search_frac=0, val_frac=0)


def test_out_dir_of_another_tokenizer_is_refused(tmp_path, tok):
    corpus(tmp_path / "in")
    out = prepare([tmp_path / "in"], tok, tmp_path / "out", tokenizer_source="tiny", workers=1)
    before = read_manifest(out)
    other = _other_tokenizer()
    with pytest.raises(DataError) as exc:
        prepare([tmp_path / "in"], other, out, tokenizer_source="other", workers=1)
    msg = one_line(exc)
    assert before["tokenizer"]["fingerprint"] in msg and "another tokenizer" in msg
    assert read_manifest(out) == before  # nothing lost
    replaced = read_manifest(
        prepare([tmp_path / "in"], other, out, tokenizer_source="other", workers=1, overwrite=True)
    )
    assert replaced["tokenizer"]["fingerprint"] != before["tokenizer"]["fingerprint"]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        prepare([tmp_path / "in"], tok, tmp_path / "foreign", tokenizer_source="tiny", workers=1)


def _other_tokenizer():
    tok = tiny_tokenizer()
    tok.add_tokens(["<extra>"])
    return tok


def test_disk_full_mid_write_leaves_no_half_shard_and_rerun_finishes(tmp_path, tok, monkeypatch):
    corpus(tmp_path / "in", n=30)
    kw = dict(tokenizer_source="t", workers=1, shard_tokens=80, search_frac=2, val_frac=2)
    clean = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "clean", **kw))
    real, calls = shards_mod._write_chunk, {"n": 0}

    def fill_up(fh, data):
        calls["n"] += 1
        if calls["n"] >= 6:  # the disk fills up half-way through the sixth shard
            fh.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(shards_mod, "_write_chunk", fill_up)
    out = tmp_path / "out"
    with pytest.raises(DataError) as exc:
        prepare([tmp_path / "in"], tok, out, **kw)
    assert "disk is full" in one_line(exc) and "rerun" in str(exc.value)
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]
    progress = json.loads((out / ".progress.json").read_text())
    recorded = {sh["file"] for sp in progress["splits"].values() for sh in sp["shards"]}
    assert {str(p.relative_to(out)) for p in out.rglob("*.bin")} == recorded  # only complete shards remain
    monkeypatch.setattr(shards_mod, "_write_chunk", real)
    assert read_manifest(prepare([tmp_path / "in"], tok, out, **kw))["splits"] == clean["splits"]


def test_too_few_documents_for_the_split(tmp_path, tok):
    (tmp_path / "one.txt").write_text(TEXT)
    with pytest.raises(DataError, match="1 documents, too few"):
        prepare([tmp_path / "one.txt"], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    out = prepare(
        [tmp_path / "one.txt"], tok, tmp_path / "out", tokenizer_source="t", workers=1, search_frac=0, val_frac=0
    )
    assert read_manifest(out)["splits"]["val"]["tokens"] == 0 and len(open_split(out, "val")) == 0


def test_corrupt_or_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="holds no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        read_manifest(tmp_path)


def test_damaged_compressed_file(tmp_path, tok):
    (tmp_path / "a.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-gzip")
    with pytest.raises(DataError) as exc:
        prepare([tmp_path / "a.jsonl.gz"], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    assert "could not read" in one_line(exc) and "a.jsonl.gz" in str(exc.value)
