"""``headstart eval``: perplexity, generations, size and (optionally) lm-eval tasks of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.configs import EvalConfig
from headstart.errors import ConfigError, DataError


def _check_outputs(cfg: EvalConfig) -> None:
    """Refuse what would fail only after the model is loaded: a missing --text, --json onto a directory
    or into a missing folder, --tasks without lm-eval."""
    if cfg.text and not Path(cfg.text).is_file():
        raise DataError(f"--text {cfg.text} does not exist; give a UTF-8 text file")
    if cfg.json_out:
        path = Path(cfg.json_out)
        if path.is_dir():
            raise ConfigError(f"--json {path} is a directory; give a file name")
        if not path.parent.is_dir():
            raise ConfigError(f"--json {path}: the folder {path.parent} does not exist; create it first")
    if cfg.tasks:
        from headstart.evaluate import require_lm_eval

        require_lm_eval()
    if cfg.data:
        from headstart.data import read_manifest

        if cfg.split not in read_manifest(cfg.data)["splits"]:
            raise DataError(f"--split {cfg.split!r} is not a split of {cfg.data}; use train, search or val")
    from headstart import preflight
    from headstart.teacher import model_config

    preflight.seq_len(model_config(cfg.checkpoint), cfg.seq_len, "the checkpoint")


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate the checkpoint; writes ``--json`` when asked; returns the results."""
    from headstart import evaluate as ev
    from headstart.io import write_json

    _check_outputs(cfg)
    model, tokenizer = ev.load_checkpoint_dir(cfg.checkpoint)
    result: dict[str, Any] = {"checkpoint": str(cfg.checkpoint), **ev.size_of(model, cfg.seq_len)}
    windows = None
    if cfg.data:
        from headstart.data import check_tokenizer, check_vocab, fixed_windows, read_manifest

        check_tokenizer(cfg.data, tokenizer)
        check_vocab(model.config.vocab_size, read_manifest(cfg.data)["vocab_size"])
        windows = fixed_windows(cfg.data, cfg.split, cfg.seq_len, cfg.windows, seed=cfg.seed)
    elif cfg.text:
        text = Path(cfg.text).read_text(encoding="utf-8", errors="replace")
        windows = ev.text_windows(tokenizer, text, cfg.seq_len, cfg.windows)
    if windows is not None:
        result.update(ev.perplexity(model, windows, cfg.batch_size, dtype=cfg.dtype))
    if cfg.max_new_tokens > 0:
        prompts = [p for p in cfg.prompts.split("|") if p]
        result["samples"] = ev.sample(model, tokenizer, prompts, cfg.max_new_tokens, seed=cfg.seed)
    if cfg.tasks:
        result["tasks"] = ev.lm_eval_tasks(cfg.checkpoint, cfg.tasks.split(","), cfg.batch_size, cfg.limit)
    result["config"] = {k: v for k, v in vars(cfg).items()}
    if cfg.json_out:
        write_json(cfg.json_out, result)
    return result


def summary(r: dict[str, Any], cfg: EvalConfig) -> str:
    """Size, loss and perplexity, task metrics, samples."""
    lines = [f"{r['checkpoint']}: {r['params']:,} parameters, {r['flops_per_token']:,} forward FLOPs/token"]
    if "loss" in r:
        lines.append(f"  loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}  ({r['tokens']:,} tokens)")
    for task, metrics in r.get("tasks", {}).items():
        lines.append(f"  {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    lines += ["  > " + s.replace("\n", " ")[:200] for s in r.get("samples", [])]
    return "\n".join(lines)
