"""FSDP2 with the teacher sharded too (forward only) gives the losses of a replicated teacher (2 gloo processes)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
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

from headstart import parallel
from headstart.errors import ConfigError
from headstart.training.loop import Trainer

SEQ, STEPS = 16, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(root: str, name: str, rank: int, world: int, runtime: dict) -> list[dict]:
    cfg = config(root, tokens=STEPS * 4 * SEQ, batch_size=2, kd={"kind": "forward", "alpha": 0.3},
                 validation={"every": STEPS}, runtime={"fsdp": True, **runtime})
    stream = token_stream(3000)
    loader = StandInLoader(stream[:2500], SEQ, 2, seed=1, rank=rank, world_size=world)
    val = StandInLoader(stream[2500:], SEQ, 1).windows[:4]
    trainer = Trainer(cfg, tiny_llama(1), loader, out=out_dir(root / name), val_windows=val, vocab=VOCAB,
                      teacher=confident_teacher())
    teacher_block = next(iter(trainer.ctx.teacher.model.layers.parameters()))
    sharded = type(teacher_block).__name__ == "DTensor"
    trainer.fit()
    rows = [json.loads(line) for line in (Path(out_dir(root / name)) / "metrics.jsonl").read_text().splitlines()]
    return [{"sharded": sharded, **{k: r[k] for k in ("loss", "ce", "kd", "grad_norm") if k in r}} for r in rows]


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert parallel.init(backend="gloo")
    try:
        out = {name: _losses(Path(root), name, rank, world, runtime) for name, runtime in {
            "sharded": {"shard_teacher": True}, "replicated": {"shard_teacher": False},
            "bf16": {"shard_teacher": True, "dtype": "bfloat16"}}.items()}
        if rank == 0:
            Path(root, "losses.json").write_text(json.dumps(out))
    finally:
        parallel.destroy()


def test_sharded_teacher_matches_replicated(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    got = json.loads((tmp_path / "losses.json").read_text())
    sharded, replicated, bf16 = got["sharded"], got["replicated"], got["bf16"]
    assert all(r["sharded"] for r in sharded) and not any(r["sharded"] for r in replicated)
    assert len(sharded) == len(replicated) == STEPS
    for a, b in zip(sharded, replicated):
        for key in ("loss", "ce", "kd", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    # bf16 mixed precision (bf16 compute and all-gathers, fp32 reductions) follows the fp32 run closely
    for a, b in zip(bf16, sharded):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.05)


def test_fp16_training_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="float16 would train without loss scaling"):
        config(tmp_path, runtime={"dtype": "float16"})
