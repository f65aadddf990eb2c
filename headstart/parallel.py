"""Multi-process helpers: the only module that touches ``torch.distributed``.

Launch with ``torchrun --nproc_per_node=N -m headstart train ...``: :func:`init` reads the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and starts the process group
(NCCL on CUDA, gloo on CPU). Without torchrun everything here degrades to single-process no-ops,
so callers never branch on "is this distributed".
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this is rank 0 (the process that logs and writes files)."""
    return rank() == 0


def device() -> torch.device:
    """The device this process computes on: its local CUDA device, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Start the process group when launched by torchrun (``WORLD_SIZE`` > 1); return whether it did."""
    if dist.is_initialized():
        return is_distributed()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(device())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("process group up: rank %d of %d (%s)", rank(), world_size(), backend)
    return True


def destroy() -> None:
    """Tear the process group down (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes, in place; returns ``t`` (CPU tensors travel via the GPU under NCCL)."""
    if is_distributed():
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            on_device = t.to(device())
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            t.copy_(on_device.cpu())
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (a one-element list when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_ddp(model: nn.Module) -> nn.Module:
    """``model`` under DistributedDataParallel (unchanged when not distributed)."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = device()
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def shard_fsdp(model: nn.Module, blocks: nn.ModuleList, *, root: bool = True,
               param_dtype: torch.dtype | None = None) -> nn.Module:
    """FSDP2: ``fully_shard`` each block, then the root (which keeps embeddings, final norm, head).

    ``root=False`` shards only the blocks (a frozen teacher whose head is read outside its forward).
    ``param_dtype`` sets mixed precision for compute (gradients are reduced in fp32).
    """
    if not is_distributed():
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in blocks:
        fully_shard(block, mp_policy=mp)
    if root:
        fully_shard(model, mp_policy=mp)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 modules are not wrapped)."""
    return getattr(model, "module", model)


@contextlib.contextmanager
def no_grad_sync(model: nn.Module, skip: bool) -> Iterator[None]:
    """Skip the gradient all-reduce of this backward (all but the last micro-batch of a step)."""
    if skip and hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif skip and hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the CPU (complete on rank 0 under FSDP), wrapper-free keys."""
    return get_model_state_dict(model, options=_FULL)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name, complete on rank 0."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict[str, Any],
                    optimizer_state: dict[str, Any] | None) -> None:
    """Load states produced by :func:`full_model_state` / :func:`full_optimizer_state` (every rank)."""
    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(model, model_state, options=opts)
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=opts)
