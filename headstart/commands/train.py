"""``headstart train``: pretrain a student with cross-entropy and distillation from the teacher.

Single process: ``headstart train --teacher T --student S --data D --out O``; several processes:
``torchrun --nproc_per_node=N -m headstart train ...`` (DDP, or FSDP2 with ``--fsdp``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from headstart import parallel
from headstart.train.config import AUTOCAST, TrainConfig
from headstart.train.kd_loss import KINDS

HELP = "pretrain a student with knowledge distillation from the teacher (resumable, torchrun-ready)"

_D = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart train`` (every one also settable from ``--config x.yaml``)."""
    io = p.add_argument_group("models and data")
    io.add_argument("--student", required=True,
                    help="exported student directory, a spec file of the teacher (extracted on the fly), or "
                         "random:<spec file or directory> (same architecture, fresh init)")
    io.add_argument("--teacher", help="model directory, .gguf file, hub id, or builtin:smollm2-135m")
    io.add_argument("--data", required=True, help="prepared data directory (headstart prepare)")
    io.add_argument("--out", required=True, help="run directory: metrics, checkpoints, config.yaml, student/")
    io.add_argument("--teacher-cache", help="cached top-k teacher log-probs (headstart cache-logits) instead of "
                                            "running the teacher")
    opt = p.add_argument_group("budget and optimisation")
    opt.add_argument("--tokens", type=int, default=_D["tokens"], help="training budget in tokens (default %(default)s)")
    opt.add_argument("--seq-len", type=int, default=_D["seq_len"], help="tokens per window (default %(default)s)")
    opt.add_argument("--batch-size", type=int, default=_D["batch_size"], help="windows per micro-batch per process")
    opt.add_argument("--grad-accum", type=int, default=_D["grad_accum"], help="micro-batches per optimizer step")
    opt.add_argument("--lr", type=float, default=_D["lr"], help="peak learning rate (default %(default)s)")
    opt.add_argument("--min-lr", type=float, default=_D["min_lr"], help="cosine floor (default %(default)s)")
    opt.add_argument("--warmup", type=float, default=_D["warmup"],
                     help="warmup: a fraction of the steps when < 1, else steps (default %(default)s)")
    opt.add_argument("--weight-decay", type=float, default=_D["weight_decay"], help="AdamW weight decay")
    opt.add_argument("--clip", type=float, default=_D["clip"], help="gradient norm clip (0: off)")
    opt.add_argument("--seed", type=int, default=_D["seed"], help="seed of init, data order and everything random")
    loss = p.add_argument_group("loss: alpha*CE + (1-alpha)*T^2*D(teacher||student)")
    loss.add_argument("--kd", choices=KINDS, default=_D["kd"], help="divergence D (none: CE only)")
    loss.add_argument("--alpha", type=float, default=_D["alpha"], help="weight of CE (default %(default)s)")
    loss.add_argument("--temperature", type=float, default=_D["temperature"], help="softmax temperature T")
    loss.add_argument("--jsd-beta", type=float, default=_D["jsd_beta"], help="teacher weight of the JSD mixture")
    loss.add_argument("--loss-chunk", type=int, help="tokens per chunk of the memory-safe loss (default: auto)")
    run = p.add_argument_group("evaluation, checkpoints, logging")
    run.add_argument("--eval-every", type=int, default=_D["eval_every"], help="steps between validations (0: end)")
    run.add_argument("--eval-windows", type=int, default=_D["eval_windows"], help="fixed val windows (0: none)")
    run.add_argument("--target-loss", type=float,
                     help="stop early once the validation loss reaches this value (the schedule is unchanged)")
    run.add_argument("--save-every", type=int, default=_D["save_every"], help="steps between checkpoints")
    run.add_argument("--keep", type=int, default=_D["keep"], help="checkpoints kept (newest)")
    run.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    run.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboard)")
    run.add_argument("--wandb", metavar="PROJECT", help="also log to Weights & Biases (needs wandb)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    hw = p.add_argument_group("speed and memory")
    hw.add_argument("--autocast", "--dtype", dest="autocast", choices=AUTOCAST, default=_D["autocast"],
                    help="mixed precision (auto: bf16 where the device supports it fast)")
    hw.add_argument("--compile", action="store_true", help="torch.compile each block (slow start)")
    hw.add_argument("--activation-checkpointing", action="store_true", help="recompute activations in backward")
    hw.add_argument("--fsdp", action="store_true", help="under torchrun: FSDP2 (fully_shard) instead of DDP")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated :class:`TrainConfig` of parsed arguments."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def run(args: argparse.Namespace) -> int:
    """Train, export, print where the student is (rank 0)."""
    cfg = config_from_args(args)
    from headstart.train.build import run as train_run

    parallel.init()
    try:
        result = train_run(cfg)
        parallel.barrier()  # every rank done (rank 0 exports) before the group goes down
    finally:
        parallel.destroy()
    if parallel.is_main():
        if result.get("interrupted"):
            print(f"stopped at step {result['step']}; continue with the same command and --resume")
            return 130
        final = {k: round(v, 4) for k, v in result.get("last", {}).items()}
        print(json.dumps({"student": result["student_dir"], "steps": result["step"], "tokens": result["tokens"],
                          **final}))
    return 0
