"""Evaluation of an exported checkpoint: perplexity, sampled generations, size, lm-eval tasks.

The eval stage is :func:`check` (before the model loads) and :func:`run` (``headstart eval``).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from headstart.config.evaluate import EvalConfig, EvalPaths
from headstart.errors import CheckpointError, ConfigError, DataError
from headstart.lm_loss import sum_cross_entropy
from headstart.models import get_adapter
from headstart.progress import Progress, report

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = ("To be, or not to be", "My lord, the king", "What light through yonder")


def perplexity(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 8,
               dtype: str = "float32") -> dict[str, float]:
    """Mean loss and perplexity over ``windows``, computed in ``dtype`` (see :mod:`headstart.precision`)."""
    from headstart.precision import compute_dtype

    device = next(model.parameters()).device
    total, count = sum_cross_entropy(model, windows, batch_size, compute_dtype(dtype, device))
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}


@torch.no_grad()
def sample(model: PreTrainedModel, tokenizer: Any, prompts: list[str] | tuple[str, ...], max_new_tokens: int = 40,
           seed: int = 0, temperature: float = 0.8, top_k: int = 50) -> list[str]:
    """One seeded sampled continuation per prompt."""
    out = []
    device = next(model.parameters()).device
    for i, prompt in enumerate(prompts):
        torch.manual_seed(seed + i)
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                 top_k=top_k, pad_token_id=tokenizer.eos_token_id)
        out.append(tokenizer.decode(gen[0], skip_special_tokens=True))
    return out


def load_checkpoint_dir(path: str | os.PathLike[str], require_tokenizer: bool = False) -> tuple[PreTrainedModel, Any]:
    """An exported student (or any supported HF directory) and its tokenizer, read safely (no remote code).

    The config and weights are checked against each other (:mod:`headstart.integrity`); with
    ``require_tokenizer`` a checkpoint without tokenizer files is refused in one line.
    """
    from headstart.teacher import load_model, load_tokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a checkpoint directory (no config.json)")
    tokenizer = load_tokenizer(path, require=require_tokenizer)
    return load_model(path).eval(), tokenizer


def text_windows(tokenizer: Any, text: str, seq_len: int, n: int) -> torch.Tensor:
    """Consecutive non-overlapping windows [≤n, seq_len+1] of a text (for ``--text``)."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    k = min(n, ids.numel() // (seq_len + 1))
    if k == 0:
        raise DataError(f"the text has {ids.numel()} tokens, fewer than one window of {seq_len + 1}")
    return ids[: k * (seq_len + 1)].view(k, seq_len + 1)


def require_lm_eval() -> None:
    """:class:`ConfigError` unless lm-evaluation-harness is installed (checked before any model loads)."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError("--tasks needs lm-evaluation-harness: pip install 'headstart[lm-eval]'")


def lm_eval_tasks(path: str | os.PathLike[str], tasks: list[str], batch_size: int = 8,
                  limit: int | None = None) -> dict[str, dict[str, float]]:
    """lm-evaluation-harness tasks on an exported checkpoint (needs the ``lm-eval`` extra), on this
    process's device (CUDA when available, else the CPU)."""
    require_lm_eval()
    import lm_eval

    from headstart.parallel import device

    try:
        results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={path}", tasks=tasks,
                                          batch_size=batch_size, limit=limit, device=str(device()))
    except (OSError, ConnectionError, ValueError, KeyError) as exc:  # offline datasets, unknown tasks
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise DataError(f"lm-eval could not run {','.join(tasks)}: {msg}; check the task names and that their "
                        "datasets are reachable or cached") from None
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            for task, metrics in results["results"].items()}


def size_of(model: PreTrainedModel, seq_len: int) -> dict[str, int]:
    """Analytic parameters and forward FLOPs/token of a model of a supported family."""
    counts = get_adapter(model.config).counts(seq_len=seq_len)
    return {"params": counts.params, "non_embedding_params": counts.non_embedding_params,
            "flops_per_token": counts.flops_per_token}


def check(paths: EvalPaths, cfg: EvalConfig) -> None:
    """Refuse what would fail only after the model is loaded: a missing --text, --json onto a directory or into
    a missing folder, --tasks without lm-eval, a split the data lacks, windows longer than the positions."""
    from headstart import preflight
    from headstart.teacher import model_config

    if paths.text and not Path(paths.text).is_file():
        raise DataError(f"--text {paths.text} does not exist; give a UTF-8 text file")
    if paths.json_out:
        out = Path(paths.json_out)
        if out.is_dir():
            raise ConfigError(f"--json {out} is a directory; give a file name")
        if not out.parent.is_dir():
            raise ConfigError(f"--json {out}: the folder {out.parent} does not exist; create it first")
    if cfg.tasks:
        require_lm_eval()
    if paths.data:
        from headstart.data import read_manifest

        if cfg.split not in read_manifest(paths.data)["splits"]:
            raise DataError(f"split {cfg.split!r} is not a split of {paths.data}; use train, search or val")
    preflight.seq_len(model_config(paths.checkpoint), cfg.seq_len, "the checkpoint")


def run(paths: EvalPaths, cfg: EvalConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate the checkpoint; writes ``--json`` when asked; returns the results."""
    from headstart.io import write_json

    check(paths, cfg)
    report(progress, "eval: load", 0, 1)
    model, tokenizer = load_checkpoint_dir(paths.checkpoint)
    report(progress, "eval: load", 1, 1)
    result: dict[str, Any] = {"checkpoint": str(paths.checkpoint), **size_of(model, cfg.seq_len)}
    windows = None
    if paths.data:
        from headstart.data import check_tokenizer, check_vocab, fixed_windows, read_manifest

        check_tokenizer(paths.data, tokenizer)
        check_vocab(model.config.vocab_size, read_manifest(paths.data)["vocab_size"])
        windows = fixed_windows(paths.data, cfg.split, cfg.seq_len, cfg.windows, seed=cfg.seed)
    elif paths.text:
        text = Path(paths.text).read_text(encoding="utf-8", errors="replace")
        windows = text_windows(tokenizer, text, cfg.seq_len, cfg.windows)
    if windows is not None:
        report(progress, "eval: perplexity", 0, 1)
        result.update(perplexity(model, windows, cfg.batch_size, dtype=cfg.dtype))
        report(progress, "eval: perplexity", 1, 1)
    if cfg.max_new_tokens > 0:
        prompts = [p for p in cfg.prompts.split("|") if p]
        result["samples"] = sample(model, tokenizer, prompts, cfg.max_new_tokens, seed=cfg.seed)
    result["config"] = {"paths": paths.to_dict(), **cfg.to_dict()}
    if cfg.tasks:
        try:
            result["tasks"] = lm_eval_tasks(paths.checkpoint, cfg.task_list(), cfg.batch_size, cfg.limit)
        except DataError as exc:  # keep what was measured: perplexity and samples are written, then the error
            if paths.json_out:
                write_json(paths.json_out, {**result, "tasks_error": str(exc)})
            raise
    if paths.json_out:
        write_json(paths.json_out, result)
    return result
