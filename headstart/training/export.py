"""The trained student as a standard Hugging Face checkpoint, verified against the model in memory."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from headstart import parallel
from headstart.io import atomic_dir, write_json

log = logging.getLogger(__name__)

SUMMARY = "training_summary.json"


def export_trained(trainer: Any, tokenizer: Any, out_dir: Path, summary: dict[str, Any]) -> Path | None:
    """Write the trained student as a Hugging Face checkpoint with ``training_summary.json``.

    Collective (every rank calls it); rank 0 writes to a temporary sibling, reloads it and compares its
    logits with the trained student (:func:`headstart.extraction.verify_export`), then swaps it into place.
    """
    module = parallel.unwrap(trainer.model)
    if trainer.cfg.runtime.fsdp and parallel.is_distributed():
        state = {k.removeprefix("student."): v for k, v in parallel.full_model_state(trainer.model).items()}
    else:
        state = None
    if not parallel.is_main():
        return None
    student = module.student
    if state is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            student = AutoModelForCausalLM.from_config(student.config, dtype=torch.float32)
        student.load_state_dict(state)
    from headstart.extraction import copy_license, verify_export

    was_training = student.training
    student.eval()
    try:
        with atomic_dir(out_dir, replace=True) as tmp:
            parallel.save_pretrained(student, tmp)  # also from a solo rank (a search rung)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            write_json(tmp / SUMMARY, summary, default=str)
            copy_license(summary.get("teacher"), tmp)
            verify_export(student, tmp)
    finally:
        student.train(was_training)
    log.info("exported the trained student to %s", out_dir)
    return out_dir
