"""Sharded (DCP) checkpoints of FSDP2 runs: save with 2 processes, resume with 1, 2 and 4 (gloo, CPU).

The whole path runs: ``headstart.training.stage.run`` on a prepared corpus, a tiny teacher on disk,
the real :class:`~headstart.data.WindowLoader`, FSDP2 with a sharded teacher, export to a plain
Hugging Face checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tiny import prepared_corpus, save_tiny_teacher
from transformers import AutoModelForCausalLM

from headstart import parallel
from headstart.config.train import TrainConfig, TrainPaths
from headstart.training import stage
from headstart.training.checkpoint import latest_checkpoint, list_checkpoints
from headstart.training.dcp import is_sharded, load_student_weights

SEQ, GLOBAL_BATCH, STEPS = 16, 4, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, str]:

    root = tmp_path_factory.mktemp("reshard")
    teacher = save_tiny_teacher("smollm2", root / "teacher")  # tied embeddings: the hard case for sharding
    data = prepared_corpus(root)
    return {"teacher": str(teacher), "data": str(data), "root": str(root)}


def _cfg(world: int, **kw) -> TrainConfig:
    """The run's options; ``kw`` sets top-level options or (as mappings) a section's options."""
    base: dict = {"tokens": STEPS * GLOBAL_BATCH * SEQ, "seq_len": SEQ, "batch_size": GLOBAL_BATCH // world,
                  "optim": {"lr": 3e-3}, "schedule": {"min_lr": 3e-4, "warmup": 1},
                  "validation": {"every": 2, "windows": 2}, "checkpoint": {"every": 2, "keep": 3},
                  "runtime": {"dtype": "float32", "fsdp": True}, "kd": {"kind": "forward", "alpha": 0.5}}
    for key, value in kw.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig(**base)


def run(setup: dict[str, str], out: Path, world: int, resume: bool = False, **kw) -> None:
    """Train ``out`` with :func:`_cfg`'s options (``kw`` over them) through the train stage."""
    paths = TrainPaths(student=f"random:{setup['teacher']}", data=setup["data"], out=str(out),
                       teacher=setup["teacher"], resume=resume)
    stage.run(paths, _cfg(world, **kw))


def _resume_from(src: Path, dst: Path) -> None:
    """``dst`` starts as a run whose newest checkpoint is ``src`` (as if it had been stopped there)."""
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copytree(src, dst / "checkpoints" / src.name)


def _worker(rank: int, world: int, port: int, jobs: list[tuple[dict[str, str], str, str | None, dict]]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert parallel.init(backend="gloo")
    try:
        for setup, out, start, kw in jobs:
            if start and rank == 0:
                _resume_from(Path(start), Path(out))
            parallel.barrier()
            run(setup, Path(out), world, resume=start is not None, **kw)
    finally:
        parallel.destroy()


def _spawn(world: int, jobs: list) -> None:
    mp.spawn(_worker, args=(world, _free_port(), jobs), nprocs=world, join=True)


def _rows(out: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _student(out: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(out / "student").state_dict()


def test_reshard_save_2_resume_1_2_4(setup, tmp_path):
    """A 2-process FSDP2 run saves sharded checkpoints; resumed from step 2 with 2 processes it ends
    bit for bit where the uninterrupted run ends (saving asynchronously), and with 1 or 4 processes
    (the same global batch) its losses continue those of the uninterrupted run within float tolerance."""
    straight, same = tmp_path / "two", tmp_path / "two-resumed"
    ckpt = straight / "checkpoints" / "step-00000002"
    _spawn(2, [(setup, str(straight), None, {}), (setup, str(same), str(ckpt), {"checkpoint": {"async_save": True}})])
    assert [p.name for p in list_checkpoints(straight)] == ["step-00000002", "step-00000004"]
    assert is_sharded(ckpt) and len(list(ckpt.glob("*.distcp"))) == 2  # each rank wrote its own shards
    assert not list((straight / "checkpoints").glob(".tmp-*"))
    want, want_rows = _student(straight), _rows(straight)
    for key, value in _student(same).items():
        assert torch.equal(value, want[key]), key  # bit-exact on the same process count
    assert _rows(same)[STEPS]["loss"] == want_rows[STEPS]["loss"]
    assert [p.name for p in list_checkpoints(same)] == ["step-00000002", "step-00000004"]

    one, four = tmp_path / "one", tmp_path / "four"
    _resume_from(ckpt, one)
    run(setup, one, 1, resume=True)  # this process, no process group
    _spawn(4, [(setup, str(four), str(ckpt), {})])
    for out in (one, four):
        rows = _rows(out)
        assert sorted(rows) == [3, 4], out
        for step in (3, 4):
            for key in ("loss", "ce", "kd", "grad_norm"):
                assert rows[step][key] == pytest.approx(want_rows[step][key], rel=1e-4, abs=1e-6), (out, step, key)
        assert rows[4]["val_loss"] == pytest.approx(want_rows[4]["val_loss"], rel=1e-4)
        assert rows[4]["tokens"] == want_rows[4]["tokens"]
        for key, value in _student(out).items():
            torch.testing.assert_close(value, want[key], rtol=1e-4, atol=2e-5, msg=key)

    # export from sharded state without any process group: the checkpoint alone gives the student
    plain = AutoModelForCausalLM.from_pretrained(setup["teacher"])
    load_student_weights(latest_checkpoint(straight), plain)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, want[key]), key


def test_reshard_refuses_another_global_batch(setup, tmp_path):
    """Resharding keeps the global batch; a different one is refused naming the key."""
    from headstart.errors import CheckpointError

    out = tmp_path / "run"
    run(setup, out, 1, tokens=2 * GLOBAL_BATCH * SEQ)
    with pytest.raises(CheckpointError, match="global_batch: 4 -> 2"):
        run(setup, out, 1, resume=True, tokens=2 * GLOBAL_BATCH * SEQ, batch_size=2)


def _stall_second_save(setup: dict[str, str], out: str, marker: str) -> None:
    """Train with a checkpoint every step; inside the save of step 2, after the shards are written
    and before DCP's metadata and the rename, announce it and wait to be killed."""
    import time

    import torch.distributed.checkpoint as dcp

    class Stalling(dcp.FileSystemWriter):
        def write_data(self, plan, planner):
            written = super().write_data(plan, planner)
            if "step-00000002" in str(self.path):
                Path(marker).touch()
                time.sleep(300)
            return written

    dcp.FileSystemWriter = Stalling
    torch.set_num_threads(1)
    run(setup, Path(out), 1, checkpoint={"every": 1}, validation={"windows": 0})


def test_reshard_kill9_during_save_keeps_previous(setup, tmp_path):
    """kill -9 in the middle of writing a sharded checkpoint: the previous one stays the newest
    complete checkpoint, the resumed run ends bit for bit where an uninterrupted run ends, and the
    next save removes the debris."""
    import signal
    import time

    out, marker = tmp_path / "killed", tmp_path / "in-save"
    child = mp.get_context("spawn").Process(target=_stall_second_save, args=(setup, str(out), str(marker)))
    child.start()
    deadline = time.monotonic() + 240
    while not marker.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the child never reached the save of step 2"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    debris = out / "checkpoints" / ".tmp-step-00000002"
    assert list(debris.glob("*.distcp")) and not (debris / ".metadata").exists()
    assert [p.name for p in list_checkpoints(out)] == ["step-00000001"]

    run(setup, out, 1, resume=True, checkpoint={"every": 1}, validation={"windows": 0})
    straight = tmp_path / "straight"
    run(setup, straight, 1, checkpoint={"every": 1}, validation={"windows": 0})
    assert not debris.exists()
    assert [p.name for p in list_checkpoints(out)] == [f"step-{s:08d}" for s in (2, 3, 4)]
    want = _student(straight)
    for key, value in _student(out).items():
        assert torch.equal(value, want[key]), key
