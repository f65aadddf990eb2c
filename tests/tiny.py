"""Tiny random models and a tiny tokenizer, built in code, for offline tests of every family."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Phi3Config,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from headstart.selection import full
from headstart.spec import SubnetSpec, TeacherDims

VOCAB = 512
TEXT = (
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate: "
    "Rough winds do shake the darling buds of May, And summer's lease hath all too short a date. "
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
    "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles. "
)

_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
               num_attention_heads=4, max_position_embeddings=256)

# Gemma: sliding (window 8, shorter than the test sequences) and global layers alternate, the two
# RoPE bases differ, and the attention scale is not 1/sqrt(head_dim); Gemma 2 soft-caps its logits
# at a value the tiny model's logits reach.
_GEMMA = dict(_COMMON, num_key_value_heads=2, head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
              layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
_ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
         "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}}

# One tiny config per supported family and variant (GQA, MQA, MHA, biases, q/k norms, tied).
FAMILIES = {
    "llama": lambda: LlamaConfig(**_COMMON, num_key_value_heads=2, head_dim=16),
    "smollm2": lambda: LlamaConfig(**_COMMON, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
    "mistral": lambda: MistralConfig(**_COMMON, num_key_value_heads=1, head_dim=16),
    "qwen2": lambda: Qwen2Config(**_COMMON, num_key_value_heads=2),
    "qwen3": lambda: Qwen3Config(**_COMMON, num_key_value_heads=2, head_dim=16),
    "gpt_neox": lambda: GPTNeoXConfig(**_COMMON, rotary_pct=0.25, use_parallel_residual=True),
    "gemma3": lambda: Gemma3TextConfig(**_GEMMA, rope_parameters=_ROPE),
    "gemma2": lambda: Gemma2Config(**_GEMMA, final_logit_softcapping=2.0, attn_logit_softcapping=5.0),
    "phi3": lambda: Phi3Config(**_COMMON, num_key_value_heads=2, head_dim=16, pad_token_id=None, eos_token_id=0,
                               bos_token_id=0),
    "olmo2": lambda: Olmo2Config(**_COMMON, num_key_value_heads=2, head_dim=16, pad_token_id=None, eos_token_id=0),
}


def tiny_model(family: str, seed: int = 0) -> PreTrainedModel:
    """A random model of ``family`` whose weights are far enough from init to make slicing matter."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(FAMILIES[family]())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with exactly ``VOCAB`` entries, trained on a few lines of Shakespeare."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def save_tiny_teacher(family: str, path: Path, seed: int = 0) -> Path:
    """Write a tiny teacher (safetensors + tokenizer) to ``path`` and return it."""
    tiny_model(family, seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_name_of(final: Path, pid: int, kind: str = "tmp") -> Path:
    """The temporary name a process ``pid`` of this host would give ``final``."""
    from headstart import io

    made = io.temp_path(final, kind)
    return made.with_name(made.name.replace(f"-{os.getpid()}-", f"-{pid}-", 1))


def layerwise_spec(dims: TeacherDims) -> SubnetSpec:
    """A layer-wise spec of a tiny teacher: its layers 0, 1, 3 (2 dropped), the full hidden width, and
    three different layer shapes."""
    whole = full(dims)
    g, hpg, m = dims.num_key_value_heads, dims.heads_per_group, dims.intermediate_size
    layer1_heads = tuple(range(hpg))[1:] or (0,)
    return SubnetSpec(
        layers=(0, 1, 3), hidden=whole.hidden,
        kv_groups=(tuple(range(g)), (g - 1,), tuple(range(g))),
        heads=(((0,),) * g, (layer1_heads,), (tuple(range(hpg)),) * g),
        mlp=(tuple(range(m // 2)), tuple(range(0, m, 5)), tuple(range(m))),
    )


def prepared_corpus(root: Path, docs: int = 10, repeat: int = 6) -> Path:
    """``docs`` small text files under ``root/corpus``, prepared with the tiny tokenizer into
    ``root/data`` (every split non-empty: one search document, two val documents)."""
    from headstart.data import prepare

    src = root / "corpus"
    src.mkdir(parents=True)
    for i in range(docs):
        (src / f"doc{i:02d}.txt").write_text((TEXT + f" {i} ") * repeat)
    return prepare([str(src)], tiny_tokenizer(), root / "data", tokenizer_source="tiny", search_frac=1, val_frac=2,
                   workers=1)
