"""Two processes (gloo, CPU) train the same weights as one process seeing the same global batch."""

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
from headstart.training.loop import Trainer

SEQ = 16
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(root, world: int, rank: int, fsdp: bool, resume: bool = False, stop_at: int | None = None) -> Trainer:
    """Train (or, with ``resume``, continue) a run; ``stop_at`` sends the stop signal's flag at that step."""
    batch = 4 // world  # the same global batch either way
    cfg = config(root, tokens=STEPS * 4 * 2 * SEQ, batch_size=batch, optim={"grad_accum": 2},
                 kd={"kind": "jsd", "alpha": 0.4, "temperature": 1.5}, validation={"every": 2},
                 checkpoint={"every": 0 if stop_at else 2}, runtime={"fsdp": fsdp})
    stream = token_stream(4000)
    loader = StandInLoader(stream[:3500], SEQ, batch, seed=3, rank=rank, world_size=world)
    val = StandInLoader(stream[3500:], SEQ, 1).windows[:6]
    trainer = Trainer(cfg, tiny_llama(1), loader, out=out_dir(root), resume=resume, val_windows=val, vocab=VOCAB,
                      teacher=confident_teacher())
    trainer.stop_poll_every = 2  # the ranks agree on a stop signal every 2 steps (and at the last)

    def on_step(t: Trainer) -> None:
        if t.counters.step == stop_at and rank == 0:  # one rank's SIGTERM stops every rank
            t._stop = True

    trainer.fit(on_step=on_step)
    return trainer


def _worker(rank: int, world: int, port: int, root: str, fsdp: bool, resume: bool = False,
            stop_at: int | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert parallel.init(backend="gloo")
    try:
        trainer = _train(Path(root), world, rank, fsdp, resume, stop_at)
        state = parallel.full_model_state(trainer.model)
        if rank == 0:
            torch.save(state, os.path.join(root, "final.pt"))
        parallel.barrier()
    finally:
        parallel.destroy()


def _rows(root) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(out_dir(Path(root)), "metrics.jsonl"))]


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_match_one(tmp_path, fsdp):
    single = _train(tmp_path / "single", 1, 0, fsdp=False)
    want = parallel.full_model_state(single.model)
    root = str(tmp_path / "multi")
    os.makedirs(root)
    mp.spawn(_worker, args=(2, _free_port(), root, fsdp), nprocs=2, join=True)
    got = torch.load(os.path.join(root, "final.pt"), weights_only=True)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=2e-5, msg=key)
    rows_1, rows_2 = _rows(tmp_path / "single"), _rows(root)
    assert [r["tokens"] for r in rows_2] == [r["tokens"] for r in rows_1]
    for a, b in zip(rows_1, rows_2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        assert b.get("val_loss", 0) == pytest.approx(a.get("val_loss", 0), rel=1e-4)
    # rank 0 wrote the checkpoints; they hold one loader state per rank
    ckpts = sorted(os.listdir(os.path.join(out_dir(Path(root)), "checkpoints")))
    assert ckpts == ["step-00000002", "step-00000004"]
    ranks = torch.load(os.path.join(out_dir(Path(root)), "checkpoints", ckpts[-1], "ranks.pt"), weights_only=True)
    assert len(ranks) == 2 and ranks[0]["loader"] == ranks[1]["loader"]


def test_two_processes_interrupted_and_resumed_match_uninterrupted(tmp_path):
    """A 2-process DDP run signalled at step 1 (on one rank) stops both ranks at the next poll, step 2, and
    resumed ends with the weights of the uninterrupted 2-process run."""
    runs = {}
    for name, phases in {"straight": [(False, None)], "resumed": [(False, 1), (True, None)]}.items():
        root = str(tmp_path / name)
        os.makedirs(root)
        for resume, stop_at in phases:
            mp.spawn(_worker, args=(2, _free_port(), root, False, resume, stop_at), nprocs=2, join=True)
            if stop_at:
                ckpts = os.listdir(os.path.join(out_dir(Path(root)), "checkpoints"))
                assert ckpts == [f"step-{stop_at + 1:08d}"], ckpts  # the ranks polled at step 2
        runs[name] = torch.load(os.path.join(root, "final.pt"), weights_only=True)
    for key, want in runs["straight"].items():
        assert torch.equal(runs["resumed"][key], want), key


@pytest.mark.parametrize("mode", [[], ["--runtime.fsdp"]], ids=["ddp", "fsdp2-layer-wise"])
def test_torchrun_cli_matches_single_process(tmp_path, mode):
    """`torchrun --nproc_per_node=2 -m headstart train` end to end, against one process with the same global batch
    (under FSDP2 the student is a layer-wise one: its layers differ in size)."""
    import subprocess
    import sys

    from tiny import layerwise_spec, prepared_corpus, save_tiny_teacher
    from transformers import AutoModelForCausalLM

    from headstart.cli import main
    from headstart.extraction import export
    from headstart.teacher import load_teacher

    teacher = save_tiny_teacher("smollm2", tmp_path / "teacher")
    data = prepared_corpus(tmp_path)
    student = f"random:{teacher}"
    if mode:
        loaded = load_teacher(teacher)
        student = str(export(loaded, layerwise_spec(loaded.dims), tmp_path / "student"))
    common = ["--teacher", str(teacher), "--student", student, "--data", str(data), "--tokens", "256",
              "--seq-len", "16", "--runtime.dtype", "float32", "--no-progress", "--validation.windows", "3",
              "--kd.kind", "forward"]
    assert main(["train", *common, "--out", str(tmp_path / "one"), "--batch-size", "4"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           "-m", "headstart", "train", *common, *mode, "--out", str(tmp_path / "two"), "--batch-size", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "student").state_dict()
    two = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "student").state_dict()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=2e-5, msg=key)
    summary = json.loads((tmp_path / "two" / "student" / "training_summary.json").read_text())
    assert summary["tokens"] == 256 and summary["teacher_tokens"] == 256


def _destroy_worker(rank: int, port: int, out: str) -> None:
    """A DDP module left in a reference cycle (as the train loop leaves it on some ranks) is freed by
    :func:`parallel.destroy` before the group goes down, not later at interpreter exit."""
    import gc

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    assert parallel.init(backend="gloo")

    class Holder:
        pass

    holder = Holder()
    holder.self, holder.model = holder, DistributedDataParallel(torch.nn.Linear(2, 2))
    del holder
    real, alive = dist.destroy_process_group, []
    dist.destroy_process_group = lambda *a: (alive.append(sum(isinstance(o, DistributedDataParallel)
                                                                for o in gc.get_objects())), real(*a))
    try:
        parallel.destroy()
    finally:
        dist.destroy_process_group = real
    Path(out, f"rank{rank}.json").write_text(json.dumps(alive))


def test_destroy_frees_cyclic_ddp_modules_first(tmp_path):
    mp.spawn(_destroy_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [0]
