"""Two "nodes" on localhost: two torchrun launches (--nnodes 2, one process each) meeting through a c10d
rendezvous train the student a single process trains with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch
from tiny import prepared_corpus, save_tiny_teacher
from transformers import AutoModelForCausalLM

from headstart.cli import main
from headstart.training.dcp import is_sharded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_match_one_process(tmp_path):
    teacher = save_tiny_teacher("smollm2", tmp_path / "teacher")
    data = prepared_corpus(tmp_path)
    common = ["--teacher", str(teacher), "--student", f"random:{teacher}", "--data", str(data), "--tokens", "128",
              "--seq-len", "16", "--runtime.dtype", "float32", "--no-progress", "--validation.windows", "2",
              "--kd.kind", "forward", "--runtime.fsdp"]
    assert main(["train", *common, "--out", str(tmp_path / "one"), "--batch-size", "4"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    endpoint = f"127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "headstart-test",
           "-m", "headstart", "train", *common, "--out", str(tmp_path / "two"), "--batch-size", "2"]
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-3000:]
    one = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "student").state_dict()
    two = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "student").state_dict()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=2e-5, msg=key)
    final = tmp_path / "two" / "checkpoints" / "step-00000002"
    assert is_sharded(final) and len(list(final.glob("*.distcp"))) == 2  # one shard file per node's process
