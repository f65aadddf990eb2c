"""The tokenizer guard: fingerprints, mismatched tokenizers refused, padded embedding tails accepted."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tiny import TEXT, VOCAB, tiny_tokenizer

from headstart.data import check_tokenizer, check_vocab, prepare, read_manifest, tokenizer_fingerprint
from headstart.errors import DataError


def test_fingerprint_is_stable_across_processes_and_load_paths(tmp_path):
    from transformers import AutoTokenizer

    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    code = (
        "import sys; from transformers import AutoTokenizer; from headstart.data import tokenizer_fingerprint; "
        f"print(tokenizer_fingerprint(AutoTokenizer.from_pretrained({str(tmp_path / 'tok')!r})))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(reloaded) == other
    assert len(other) == 16


def test_fingerprint_changes_with_vocabulary_or_special_tokens():
    base = tokenizer_fingerprint(tiny_tokenizer())
    more = tiny_tokenizer()
    more.add_tokens(["<new>"])
    special = tiny_tokenizer()
    special.add_special_tokens({"pad_token": "<pad>"})
    assert len({base, tokenizer_fingerprint(more), tokenizer_fingerprint(special)}) == 3


def test_check_tokenizer_refuses_a_mismatch_naming_both(tmp_path):
    tok = tiny_tokenizer()
    for i in range(6):
        (tmp_path / f"{i}.txt").write_text(TEXT[: 50 + 9 * i])
    out = prepare(sorted(tmp_path.glob("*.txt")), tok, tmp_path / "out", tokenizer_source="tiny", workers=1)
    check_tokenizer(out, tok)  # the same tokenizer passes
    other = tiny_tokenizer()
    other.add_tokens(["<new>"])
    with pytest.raises(DataError) as exc:
        check_tokenizer(out, other)
    msg = str(exc.value)
    assert tokenizer_fingerprint(tok) in msg and tokenizer_fingerprint(other) in msg and "tiny" in msg
    assert read_manifest(out)["tokenizer"]["fingerprint"] == tokenizer_fingerprint(tok)


def test_check_vocab_accepts_padded_tails_and_refuses_short_embeddings():
    tok = tiny_tokenizer()
    check_vocab(VOCAB, len(tok))  # 512 rows for 416 tokens: a padded tail
    check_vocab(152064, 151665)
    check_vocab(416, 416)
    with pytest.raises(DataError, match="400 embedding rows but the tokenizer has 416"):
        check_vocab(400, len(tok))
