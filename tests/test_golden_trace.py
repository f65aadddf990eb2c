"""A golden loss trace: a seeded tiny KD run must reproduce the committed per-step numbers.

Any change to the numerics of the training step (loss, normalisation, accumulation, clipping,
optimizer, schedule, validation) fails here. After a deliberate change, regenerate the trace with
``HEADSTART_UPDATE_GOLDEN=1 pytest tests/test_golden_trace.py`` and say why in the commit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
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

from headstart.training.loop import Trainer

GOLDEN = Path(__file__).parent / "assets" / "golden"
KEYS = ("loss", "ce", "kd", "grad_norm", "lr", "val_loss")
CASES = {
    "kd-forward-accum2": {"kd": {"kind": "forward", "alpha": 0.5}, "optim": {"grad_accum": 2},
                          "tokens": 12 * 2 * 2 * 16},
    "ce-wsd": {"kd": {"kind": "none"}, "schedule": {"name": "wsd"}, "tokens": 12 * 2 * 16},
}


def _trace(tmp_path: Path, **kw) -> list[dict[str, float]]:
    kw = {**kw, "validation": {"every": 4}, "optim": {**kw.get("optim", {}), "clip": 0.5}}
    cfg = config(tmp_path, **kw)
    stream = token_stream(7000)
    loader = StandInLoader(stream[:6000], 16, cfg.batch_size, seed=cfg.seed)
    val = StandInLoader(stream[6000:], 16, 8).windows[:8]
    teacher = confident_teacher() if cfg.kd.kind != "none" else None
    out = out_dir(tmp_path)
    Trainer(cfg, tiny_llama(1), loader, out=out, val_windows=val, vocab=VOCAB, teacher=teacher).fit()
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in KEYS if k in r} for r in rows]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_step_reproduces_its_golden_trace(tmp_path, case):
    got = _trace(tmp_path, **CASES[case])
    path = GOLDEN / f"{case}.json"
    if os.environ.get("HEADSTART_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(path.read_text())
    assert len(got) == len(want), (len(got), len(want))
    for step, (g, w) in enumerate(zip(got, want), start=1):
        assert g.keys() == w.keys(), (step, sorted(g), sorted(w))
        for key in w:  # float32 on any CPU: equal to a few ulps of accumulated rounding, not bit for bit
            assert math.isclose(g[key], w[key], rel_tol=2e-5, abs_tol=1e-6), (step, key, g[key], w[key])
