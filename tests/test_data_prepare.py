"""prepare: text -> shards round trip, manifest, reuse, resume, workers, input formats, CLI."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import signal

import numpy as np
import pytest
from tiny import TEXT, tiny_tokenizer

from headstart.data import encode as encode_mod
from headstart.data import open_split, prepare, prepare_corpus, read_manifest, tokenizer_fingerprint
from headstart.data import shards as shards_mod
from headstart.data.loader import WindowLoader
from headstart.data.sources import decode
from headstart.errors import DataError
from headstart.io import is_temp_name

EXTRA = ["Héllo wörld 🎭 — naïve café.", "Line one\n\nLine   two\twith tabs\n", "To be, or not to be."]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def write_corpus(root, n=12):
    """``n`` small text files with distinct content; returns {path: text}."""
    root.mkdir(parents=True, exist_ok=True)
    docs = {}
    for i in range(n):
        text = f"Document {i}: " + EXTRA[i % 3] + " " + TEXT[: 40 + 23 * i]
        path = root / f"doc{i:02d}.txt"
        path.write_text(text, encoding="utf-8")
        docs[str(path)] = text
    return docs


def split_docs(tok, ids, eos):
    """Decode a split's stream back into its documents."""
    cuts = np.flatnonzero(ids == eos)
    assert len(cuts) and cuts[-1] == len(ids) - 1, "every document ends with EOS"
    return [tok.decode(part.tolist()) for part in np.split(ids, cuts + 1)[:-1] for part in [part[:-1]]]


def test_round_trip_text_shards_windows(tmp_path, tok):
    docs = write_corpus(tmp_path / "in")
    out = prepare(
        [tmp_path / "in"],
        tok,
        tmp_path / "out",
        tokenizer_source="tiny",
        workers=1,
        shard_tokens=64,
        search_frac=2,
        val_frac=2,
    )
    m = read_manifest(out)
    seen = {}
    for split in ("train", "search", "val"):
        ids = open_split(out, split)
        assert ids.dtype == np.uint16
        assert len(m["splits"][split]["shards"]) > 1  # small shards: the stream spans files
        texts = split_docs(tok, np.asarray(ids), m["eos_id"])
        assert len(texts) == m["splits"][split]["documents"] == len(m["splits"][split]["names"])
        seen.update(zip(m["splits"][split]["names"], texts))
        # windows read in order are exactly the stream, so they decode to the same text
        loader = WindowLoader(out, split, seq_len=7, batch_size=1, shuffle=False, epochs=1)
        windows = np.concatenate([b[0].numpy() for b in loader])
        assert len(windows) == loader.windows_per_epoch * 8
        np.testing.assert_array_equal(windows, ids[: len(windows)])
        assert tok.decode(windows.tolist()) == tok.decode(np.asarray(ids[: len(windows)]).tolist())
    assert seen == docs  # every document once, in exactly one split, text preserved


def test_tokens_equal_the_tokenizers_own(tmp_path, tok):
    docs = write_corpus(tmp_path / "in", n=5)
    out = prepare(
        [tmp_path / "in"], tok, tmp_path / "out", tokenizer_source="tiny", workers=1, search_frac=1, val_frac=1
    )
    m = read_manifest(out)
    expected = []
    for name in m["splits"]["train"]["names"]:
        expected += tok.encode(docs[name], add_special_tokens=False) + [tok.eos_token_id]
    assert open_split(out, "train").tolist() == expected


def test_manifest_records_what_it_should(tmp_path, tok):
    from headstart import __version__
    from headstart.io import sha256_file

    docs = write_corpus(tmp_path / "in", n=10)
    out = prepare([tmp_path / "in"], tok, tmp_path / "out", tokenizer_source="tiny-src", workers=1, seed=3)
    m = read_manifest(out)
    assert m["headstart_version"] == __version__
    assert m["tokenizer"]["fingerprint"] == tokenizer_fingerprint(tok)
    assert m["tokenizer"]["source"] == "tiny-src"
    assert m["vocab_size"] == len(tok) == 416 and m["eos_id"] == tok.eos_token_id and m["dtype"] == "uint16"
    assert [s["input"] for s in m["sources"]] == sorted(docs)
    for s in m["sources"]:
        assert s["sha256"] == sha256_file(s["input"]) and s["documents"] == 1 and s["kind"] == "text"
    counts = {k: v["documents"] for k, v in m["splits"].items()}
    assert counts == {"train": 8, "search": 1, "val": 1}  # 2 % of 10 documents rounds up to one each
    assert m["total_tokens"] == sum(v["tokens"] for v in m["splits"].values())
    for split, rec in m["splits"].items():
        assert rec["tokens"] == len(open_split(out, split))
        for shard in rec["shards"]:
            assert shard["sha256"] == sha256_file(out / shard["file"])
    assert m["replaced"] == 0 and m["split_settings"]["seed"] == 3


def test_split_depends_on_seed_only(tmp_path, tok):
    write_corpus(tmp_path / "in", n=20)
    names = []
    for run, seed in enumerate([0, 0, 1]):
        out = prepare(
            [tmp_path / "in"],
            tok,
            tmp_path / f"o{run}",
            tokenizer_source="t",
            workers=1,
            seed=seed,
            search_frac=3,
            val_frac=3,
        )
        m = read_manifest(out)
        names.append((m["splits"]["search"]["names"], m["splits"]["val"]["names"]))
    assert names[0] == names[1] and names[0] != names[2]


def test_rerun_is_reused(tmp_path, tok, caplog):
    write_corpus(tmp_path / "in")
    first = prepare_corpus([tmp_path / "in"], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    mtime = (tmp_path / "out" / "manifest.json").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        second = prepare_corpus([tmp_path / "in"], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    assert not first.reused and second.reused and "reused" in caplog.text
    assert (tmp_path / "out" / "manifest.json").stat().st_mtime_ns == mtime
    assert second.manifest == first.manifest
    # changed input -> not the same preparation: refused without --overwrite, redone with it
    (tmp_path / "in" / "doc00.txt").write_text("changed text")
    with pytest.raises(Exception, match="other inputs or options"):
        prepare([tmp_path / "in"], tok, tmp_path / "out", tokenizer_source="t", workers=1)
    third = prepare_corpus([tmp_path / "in"], tok, tmp_path / "out", tokenizer_source="t", workers=1, overwrite=True)
    assert not third.reused and third.manifest["key"] != first.manifest["key"]


def test_workers_give_identical_output(tmp_path, tok):
    write_corpus(tmp_path / "in", n=30)
    kw = dict(tokenizer_source="t", shard_tokens=200, search_frac=3, val_frac=3)
    one = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "w1", workers=1, **kw))
    two = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "w2", workers=2, **kw))
    assert one["splits"] == two["splits"] and one["key"] == two["key"]


def test_interrupted_run_resumes_to_the_same_result(tmp_path, tok, monkeypatch):
    write_corpus(tmp_path / "in", n=40)
    kw = dict(tokenizer_source="t", workers=1, shard_tokens=100, search_frac=3, val_frac=3)
    clean = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "clean", **kw))
    calls = {"n": 0}
    real = shards_mod._write_chunk

    def interrupt_on_fifth(fh, data):
        calls["n"] += 1
        if calls["n"] == 5:
            fh.write(bytes(data[: len(data) // 2]))
            raise KeyboardInterrupt
        real(fh, data)

    monkeypatch.setattr(shards_mod, "_write_chunk", interrupt_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        prepare([tmp_path / "in"], tok, tmp_path / "out", **kw)
    monkeypatch.setattr(shards_mod, "_write_chunk", real)
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists()
    progress = json.loads((out / ".progress.json").read_text())
    assert progress["docs_done"] > 0
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]  # the half-written shard is gone
    resumed = read_manifest(prepare([tmp_path / "in"], tok, out, **kw))
    assert resumed["splits"] == clean["splits"] and not (out / ".progress.json").exists()


def _dies_on_document_25(texts):
    """A tokenizer worker killed (OOM killer, kill -9) while it holds one batch."""
    if any(t.startswith("Document 25:") for t in texts):
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_encode(texts)


_real_encode = encode_mod._encode_in_worker


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="the stand-in worker is forked")
def test_a_dead_tokenizer_worker_fails_clearly_and_the_rerun_resumes(tmp_path, tok, monkeypatch):
    write_corpus(tmp_path / "in", n=40)
    kw = dict(tokenizer_source="t", workers=2, shard_tokens=100, search_frac=3, val_frac=3)  # batches of 100 chars
    clean = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "clean", **kw))
    monkeypatch.setattr(encode_mod, "_encode_in_worker", _dies_on_document_25)  # forked workers inherit it
    def hang(*_):
        raise TimeoutError("prepare hung on a dead worker")

    signal.signal(signal.SIGALRM, hang)  # a hang (a multiprocessing.Pool waits forever) fails, not blocks the suite
    signal.alarm(120)
    try:
        with pytest.raises(DataError, match="tokenizer worker process died.*rerun prepare"):
            prepare([tmp_path / "in"], tok, tmp_path / "out", **kw)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    monkeypatch.undo()
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists() and not [p for p in out.rglob("*") if is_temp_name(p.name)]
    resumed = read_manifest(prepare([tmp_path / "in"], tok, out, **kw))
    assert resumed["splits"] == clean["splits"]


def test_jsonl_gz_and_large_text_pieces(tmp_path, tok):
    rows = [{"text": f"row {i} " + TEXT[: 30 + i], "id": i} for i in range(8)]
    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows[:4]) + "\n\n")
    (tmp_path / "in" / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows[4:]))
    big = "\n\n".join(f"Paragraph {i}. " + TEXT[:50] for i in range(20))
    (tmp_path / "in" / "c.md").write_text(big)
    out = prepare(
        [tmp_path / "in" / "*.jsonl*", tmp_path / "in" / "c.md"],
        tok,
        tmp_path / "out",
        tokenizer_source="t",
        workers=1,
        max_doc_bytes=300,
        search_frac=1,
        val_frac=1,
    )
    m = read_manifest(out)
    kinds = [(s["kind"], s["documents"]) for s in m["sources"]]
    assert kinds[:2] == [("jsonl", 4), ("jsonl", 4)] and kinds[2][0] == "text" and kinds[2][1] >= 4
    texts = [t for s in ("train", "search", "val") for t in split_docs(tok, np.asarray(open_split(out, s)), 0)]
    assert sorted(t for t in texts if t.startswith("row")) == sorted(r["text"] for r in rows)
    pieces = [t for t in texts if t.startswith("Paragraph")]
    assert all(len(p.encode()) <= 300 for p in pieces)
    assert (
        sorted(pieces, key=lambda p: int(p.split()[1].rstrip(".")))
        and "".join(sorted(pieces, key=lambda p: int(p.split()[1].rstrip(".")))) == big
    )


def test_zstd_and_parquet_inputs(tmp_path, tok):
    zstandard = pytest.importorskip("zstandard")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    lines = "\n".join(json.dumps({"body": f"zst {i} " + TEXT[:40]}) for i in range(4)).encode()
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    pq.write_table(pa.table({"body": [f"pq {i} " + TEXT[:30] for i in range(4)]}), tmp_path / "b.parquet")
    out = prepare(
        [tmp_path / "a.jsonl.zst", tmp_path / "b.parquet"],
        tok,
        tmp_path / "out",
        tokenizer_source="t",
        workers=1,
        text_field="body",
        search_frac=1,
        val_frac=1,
    )
    m = read_manifest(out)
    assert [(s["kind"], s["documents"]) for s in m["sources"]] == [("jsonl", 4), ("parquet", 4)]
    assert sum(r["documents"] for r in m["splits"].values()) == 8


def test_cli_prepare_and_config_file(tmp_path, capsys, caplog):
    from tiny import save_tiny_teacher

    from headstart.cli import main

    teacher = save_tiny_teacher("smollm2", tmp_path / "teacher")
    write_corpus(tmp_path / "in")
    argv = [
        "prepare",
        "--tokenizer",
        str(teacher),
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "1",
        "--no-progress",
        "--split-fractions",
        "0.8,0.1,0.1",
    ]
    caplog.set_level("INFO")
    assert main(argv) == 0
    assert "train" in capsys.readouterr().out and "reused" not in caplog.text
    assert main(argv) == 0
    assert "reused" in caplog.text
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tokenizer: {teacher}\nout: {tmp_path / 'out2'}\nsearch_frac: 2\nval-frac: 1\nworkers: 1\n")
    assert main(["prepare", "--config", str(cfg), str(tmp_path / "in"), "--no-progress"]) == 0
    m = read_manifest(tmp_path / "out2")
    assert m["splits"]["search"]["documents"] == 2 and m["splits"]["val"]["documents"] == 1
    cfg.write_text("tokenzer: x\n")
    assert main(["prepare", "--config", str(cfg), str(tmp_path / "in")]) == 2
    assert "tokenizer" in capsys.readouterr().err


def test_decode_counts_replacements():
    assert decode("ok \ufffd".encode()) == ("ok \ufffd", 0)  # a real U+FFFD is not a replacement
    text, n = decode(b"a\xffb\xe0\xa0c\xef\xbf\xbd")  # \xe0\xa0: a cut 3-byte character
    assert n == 2 and text.count("\ufffd") == 3


def test_hf_dataset_saved_to_disk(tmp_path, tok):
    datasets = pytest.importorskip("datasets")
    rows = [f"dataset row {i} " + TEXT[: 20 + 3 * i] for i in range(6)]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"content": rows})}).save_to_disk(tmp_path / "ds")
    spec = f"hf:{tmp_path / 'ds'}@train"
    out = prepare(
        [spec], tok, tmp_path / "out", tokenizer_source="t", workers=1, text_field="content", search_frac=1, val_frac=1
    )
    m = read_manifest(out)
    assert m["sources"][0]["kind"] == "hf" and m["sources"][0]["documents"] == 6 and m["sources"][0]["sha256"]
    texts = [t for s in ("train", "search", "val") for t in split_docs(tok, np.asarray(open_split(out, s)), 0)]
    assert sorted(texts) == sorted(rows)
    with pytest.raises(Exception, match="no column 'text'"):
        prepare([spec], tok, tmp_path / "out2", tokenizer_source="t", workers=1)


def test_large_vocabulary_is_stored_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from headstart.data.shards import dtype_for_vocab

    assert dtype_for_vocab(1 << 16) == np.uint16 and dtype_for_vocab((1 << 16) + 1) == np.uint32
    vocab = {"<eos>": 0, **{f"w{i}": i + 1 for i in range(70_000)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    big = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")
    for i in range(4):
        (tmp_path / f"{i}.txt").write_text(f"w{69_999 - i} w1 w{65_536 + i}")
    out = prepare(
        sorted(tmp_path.glob("*.txt")),
        big,
        tmp_path / "out",
        tokenizer_source="big",
        workers=2,
        search_frac=1,
        val_frac=1,
    )
    m = read_manifest(out)
    assert m["dtype"] == "uint32" and m["vocab_size"] == 70_001
    ids = np.concatenate([open_split(out, s) for s in ("train", "search", "val")])
    assert ids.dtype == np.uint32 and sorted(ids[ids > 65_535].tolist()) == sorted(
        [70_000 - i for i in range(4)] + [65_537 + i for i in range(4)]
    )


class PythonOnlyTokenizer:
    """A tokenizer without a Rust backend (as slow tokenizers are): only get_vocab/encode/eos."""

    def __init__(self, fast):
        self._fast, self.eos_token_id, self.eos_token = fast, fast.eos_token_id, fast.eos_token
        self.all_special_tokens = fast.all_special_tokens

    def get_vocab(self):
        return self._fast.get_vocab()

    def encode(self, text, add_special_tokens=False):
        return self._fast.encode(text, add_special_tokens=add_special_tokens)


def test_python_only_tokenizer_gives_the_same_tokens(tmp_path, tok):
    write_corpus(tmp_path / "in", n=8)
    kw = dict(tokenizer_source="t", search_frac=1, val_frac=1)
    fast = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "fast", workers=1, **kw))
    slow = read_manifest(prepare([tmp_path / "in"], PythonOnlyTokenizer(tok), tmp_path / "slow", workers=2, **kw))
    assert slow["splits"] == fast["splits"]


def test_spawned_workers_where_fork_is_missing(tmp_path, tok, monkeypatch):
    import multiprocessing

    write_corpus(tmp_path / "in", n=6)
    kw = dict(tokenizer_source="t", search_frac=1, val_frac=1)
    forked = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "fork", workers=2, **kw))
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on macOS/Windows
    spawned = read_manifest(prepare([tmp_path / "in"], tok, tmp_path / "spawn", workers=2, **kw))
    assert spawned["splits"] == forked["splits"]
