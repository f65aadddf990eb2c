"""Shared pieces of the training tests: tiny models, a token stream and a window loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from headstart.config.train import TrainConfig

VOCAB = 128


def tiny_llama(seed: int, hidden: int = 32, layers: int = 2, vocab: int = VOCAB) -> torch.nn.Module:
    """A very small random Llama (fp32)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=128,
                      tie_word_embeddings=False)
    return AutoModelForCausalLM.from_config(cfg)


def token_stream(n: int = 6000, seed: int = 0, vocab: int = VOCAB) -> np.ndarray:
    """A learnable stream: a short random motif repeated with a little noise."""
    rng = np.random.default_rng(seed)
    motif = rng.integers(0, vocab, 37)
    out = np.resize(motif, n)
    noise = rng.random(n) < 0.05
    out[noise] = rng.integers(0, vocab, noise.sum())
    return out.astype(np.int64)


class StandInLoader:
    """Non-overlapping windows of a token array, shuffled per epoch, sharded by rank; resumable."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        n = len(tokens) // (seq_len + 1)
        self.windows = torch.from_numpy(tokens[: n * (seq_len + 1)].reshape(n, seq_len + 1).copy())
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.epoch, self.pos = 0, 0

    def _order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.windows), generator=g)[self.rank::self.world]

    def __iter__(self):
        while True:
            order = self._order()
            while self.pos + self.batch_size <= len(order):
                idx = order[self.pos:self.pos + self.batch_size]
                self.pos += self.batch_size
                yield self.windows[idx]
            self.epoch, self.pos = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def config(tmp_path, **kw) -> TrainConfig:
    """A fast, deterministic configuration for tests; ``kw`` sets top-level options or (as mappings) a
    section's options over these defaults. Runs write to ``tmp_path / "run"`` (:func:`out_dir`)."""
    base = {"tokens": 8 * 2 * 16, "seq_len": 16, "batch_size": 2, "optim": {"lr": 3e-3},
            "schedule": {"min_lr": 3e-4, "warmup": 2}, "validation": {"every": 4, "windows": 4},
            "checkpoint": {"every": 0}, "runtime": {"dtype": "float32"}, "kd": {"kind": "forward", "alpha": 0.5}}
    for key, value in kw.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig(**base)


def out_dir(tmp_path) -> str:
    """Where the runs of :func:`config` write."""
    return str(tmp_path / "run")


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Keys whose tensors differ in any bit."""
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def confident_teacher(seed: int = 7) -> torch.nn.Module:
    """A random teacher with a sharp output distribution, so that there is something to distil."""
    teacher = tiny_llama(seed, hidden=48)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(8.0)
    return teacher
