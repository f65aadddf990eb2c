"""Multi-process helpers: the only module that touches ``torch.distributed``.

Launch with ``torchrun --nproc_per_node=N -m headstart train ...``: :func:`init` reads the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and starts the process group
(NCCL on CUDA, gloo on CPU). Without torchrun everything here degrades to single-process no-ops,
so callers never branch on "is this distributed". :func:`spread` hands independent pieces of work
to the processes (each piece computed by one process alone, under :func:`solo`) and gathers the
results on every process.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

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

T = TypeVar("T")
R = TypeVar("R")
_solo = False  # inside solo(): this process acts alone although a process group is up
_arrivals = 0  # spread() calls so far (the same count on every process)


def _grouped() -> bool:
    return not _solo and dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """Whether a process group with more than one process is running (and this process is not :func:`solo`)."""
    return _grouped() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed, and inside :func:`solo`)."""
    return dist.get_rank() if _grouped() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed, and inside :func:`solo`)."""
    return dist.get_world_size() if _grouped() else 1


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Within this block the process acts alone: rank 0 of 1, collectives are no-ops, it is the main
    process (it logs and writes). For work one process does by itself while the others do other work,
    e.g. one training run of the search's rungs; no collective of the group may run inside."""
    global _solo
    before, _solo = _solo, True
    try:
        yield
    finally:
        _solo = before


def spread(fn: Callable[[T], R], items: Sequence[T], costs: Sequence[float] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` with each item computed by one process, alone (:func:`solo`), and
    every result gathered, in item order, on every process.

    Items go to processes by their ``costs`` (greedy: the costliest item to the least loaded process;
    default: equal costs, item ``i`` to rank ``i % world``), the same plan on every process. An
    exception in ``fn`` on any process is raised on every process (none is left waiting).
    """
    if not is_distributed():
        with solo():
            return [fn(x) for x in items]
    me = rank()
    owners = _plan([1.0] * len(items) if costs is None else [float(c) for c in costs], world_size())
    done: list[tuple[int, Any]] = []
    error: Exception | None = None
    try:
        with solo():
            for i in (i for i, r in enumerate(owners) if r == me):
                done.append((i, fn(items[i])))
    except Exception as exc:  # raised again below, on every process, once the others know of it
        error = exc
    _wait_for_all()  # a rank with more work may take longer than the group's timeout allows a collective
    gathered = all_gather_object((done, None if error is None else _portable(error)))
    if error is not None:
        raise error
    for _, failure in gathered:
        if failure is not None:
            raise failure  # the first failed rank's exception, on every other rank
    out: list[Any] = [None] * len(items)
    for part, _ in gathered:
        for i, value in part:
            out[i] = value
    return out


def _wait_for_all() -> None:
    """Block until every process reaches this call, however long that takes: a waiting collective is
    aborted after the process group's timeout, but a rank that trains a long rung run may exceed it.
    Counts arrivals in the group's key-value store and polls it (1 ms, backing off to 0.5 s)."""
    global _arrivals
    _arrivals += 1
    store = dist.distributed_c10d._get_default_store()
    key = f"headstart/spread/{_arrivals}"
    store.add(key, 1)
    pause = 0.001
    while store.add(key, 0) < world_size():
        time.sleep(pause)
        pause = min(0.5, pause * 2)


def _portable(error: Exception) -> Exception:
    """``error`` if it survives pickling (it travels to the other ranks), else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # any pickling failure: send a description instead
        return RuntimeError(f"rank {rank()} failed: {type(error).__name__}: {error}")


def _plan(costs: list[float], world: int) -> list[int]:
    """The rank of each item: the costliest first, each to the least loaded rank (ties: lower index)."""
    load, owner = [0.0] * world, [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
        r = min(range(world), key=lambda k: (load[k], k))
        owner[i], load[r] = r, load[r] + costs[i]
    return owner


def save_pretrained(model: nn.Module, directory: Any) -> None:
    """``model.save_pretrained(directory)`` written by this process whatever its rank. While a process
    group is up, transformers (5.x) writes only from ``torch.distributed`` rank 0, which would silently
    drop the save of a rank working alone (:func:`solo`); callers decide which process saves."""
    model.should_save_on_this_rank = lambda is_main_process: is_main_process  # shadows the rank-0 gate
    try:
        model.save_pretrained(directory)
    finally:
        del model.should_save_on_this_rank


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
    """Tear the process group down (no-op when there is none, and inside :func:`solo`).

    Garbage held in reference cycles (a DDP module, its reducer) is collected first, so every user of
    the group is gone before the group is destroyed, not at interpreter exit: there, gloo's teardown
    once aborted a finished rank ("terminate called without an active exception")."""
    if _grouped():
        gc.collect()
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


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` or any of its submodules is FSDP2-sharded (its parameters are swapped in and out)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def forward_method(model: nn.Module, name: str) -> Callable[..., Any]:
    """``model.<name>``, made to run like ``forward`` under FSDP2 (parameters gathered before, released
    after); the method itself elsewhere. Registered once per module."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    flag = f"_headstart_forward_{name}"
    if isinstance(model, FSDPModule) and not getattr(model, flag, False):
        register_fsdp_forward_method(model, name)
        setattr(model, flag, True)
    return getattr(model, name)


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
