"""The real SmolLM2 tokenizer (byte-level BPE, 49,152 tokens) trimmed by the builtin Shakespeare corpus."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoTokenizer
from vocab_support import arbitrary_texts

from headstart.data import open_split, prepare
from headstart.vocab import (
    merge_order,
    prepare_like,
    save_tokenizer,
    student_to_teacher,
    target_bytes,
    token_bytes,
    token_counts,
    trim_tokenizer,
)

pytestmark = pytest.mark.slow

_ROUND_TRIP = """
import json, sys
sys.modules["headstart"] = None
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps([tok.decode(tok.encode(t, add_special_tokens=False)) == t for t in json.loads(sys.stdin.read())]))
"""


def test_smollm2_trimmed_by_shakespeare(tmp_path):
    from headstart.assets import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    data = prepare(["builtin:shakespeare"], tok, tmp_path / "teacher", tokenizer_source="smollm2", workers=1)
    counts = token_counts(data)
    order = merge_order(tok, counts)
    assert order.required == 3 + 235  # its three role tokens and the 235 byte tokens it has (of 256)
    # the teacher cannot spell every byte (0x04 is not in its vocabulary): test the texts it round-trips
    texts = [t for t in arbitrary_texts() if tok.decode(tok.encode(t, add_special_tokens=False)) == t]
    assert len(texts) >= 7
    val, teacher_bytes = open_split(data, "val"), token_bytes(tok)
    val_text = tok.decode(val.tolist(), skip_special_tokens=True)
    per_byte = {}
    for size in (8192, 32768):
        kept = order.keep(size)
        out = save_tokenizer(trim_tokenizer(tok, kept), tmp_path / f"tok{size}")
        student, lengths = AutoTokenizer.from_pretrained(out), None
        ids = student.encode(val_text, add_special_tokens=False)
        lengths = token_bytes(student)
        assert lengths[ids].sum() == teacher_bytes[val].sum() == len(val_text.encode())  # however it is cut
        per_byte[size] = len(ids) / len(val_text.encode())
    run = subprocess.run([sys.executable, "-c", _ROUND_TRIP, str(out)], input=json.dumps(texts),
                         capture_output=True, text=True, timeout=120, check=True)  # where headstart cannot load
    assert all(json.loads(run.stdout))
    assert size > (counts > 0).sum()  # every token the train split uses is kept: the very same tokens
    again = prepare_like(data, student, tmp_path / "student", tokenizer_source=str(out), workers=1)
    np.testing.assert_array_equal(student_to_teacher(open_split(again, "train"), kept), open_split(data, "train"))
    teacher = (len(val) - (teacher_bytes[val] == 0).sum()) / len(val_text.encode())  # EOS tokens aside
    assert teacher <= per_byte[32768] <= per_byte[8192] < 1.1 * teacher
    windows = val[: 257 * 4].astype(np.int64).reshape(4, 257)
    assert target_bytes(windows, teacher_bytes).sum() == teacher_bytes[windows[:, 1:]].sum() > 0
