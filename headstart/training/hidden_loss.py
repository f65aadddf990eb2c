"""Hidden-state distillation with exact targets: no learned projection.

A sub-network student keeps a subset of the teacher's residual channels (``spec.hidden``, in the
student's channel order) and its layer ``i`` is teacher layer ``spec.layers[i]``. So the teacher's
residual stream after layer ``spec.layers[i]``, restricted to ``spec.hidden``, is a target of the
student's stream after its layer ``i`` in the student's own basis. The teacher's states are sliced
inside the forward hook, so only the kept channels of the chosen layers are held.

The term is, per matched layer, the squared error summed over channels and divided by the mean
squared norm of that layer's target (so layers of different scale weigh alike), averaged over the
matched layers and summed over tokens; the training loop divides it by the token count like the
other terms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from headstart.errors import ConfigError

Tensor = torch.Tensor


@dataclass(frozen=True)
class HiddenMap:
    """Which student layers are matched, the teacher layers they came from, and the kept channels."""

    student_layers: tuple[int, ...]
    teacher_layers: tuple[int, ...]
    channels: tuple[int, ...]  # teacher residual channels, in the student's order


def hidden_map(spec: object, choice: str) -> HiddenMap:
    """The :class:`HiddenMap` of a :class:`~headstart.spec.SubnetSpec` for ``--hidden-layers`` (all, last, i,j,...)."""
    n = len(spec.layers)  # type: ignore[attr-defined]
    if choice == "all":
        chosen = list(range(n))
    elif choice == "last":
        chosen = [n - 1]
    else:
        chosen = parse_layers(choice)
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise ConfigError(f"--hidden-layers {choice}: the student has layers 0..{n - 1}, not {bad[0]}")
    return HiddenMap(tuple(chosen), tuple(spec.layers[i] for i in chosen), tuple(spec.hidden))  # type: ignore


def parse_layers(choice: str) -> list[int]:
    """``"0,3,5"`` -> ``[0, 3, 5]``; :class:`ConfigError` otherwise."""
    try:
        layers = [int(x) for x in choice.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--hidden-layers {choice!r} must be all, last, or comma-separated layer indices") from None
    if not layers:
        raise ConfigError(f"--hidden-layers {choice!r} must be all, last, or comma-separated layer indices")
    return sorted(set(layers))


@contextlib.contextmanager
def capture(blocks: nn.ModuleList, layers: Sequence[int], channels: Tensor | None = None) -> Iterator[list[Tensor]]:
    """Collect the outputs of ``blocks[i]`` for ``i`` in ``layers`` (in that order) during the forward
    inside the ``with``; ``channels`` slices each output's last dimension at once."""
    found: dict[int, Tensor] = {}
    out: list[Tensor] = []

    def hook_for(i: int):  # noqa: ANN202
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            state = output[0] if isinstance(output, tuple) else output
            found[i] = state if channels is None else state.index_select(-1, channels)
        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in layers]
    try:
        yield out
    finally:
        for handle in handles:
            handle.remove()
        out.extend(found[i] for i in layers if i in found)


def hidden_loss_sum(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Sum over tokens of the mean over layers of ``||s - t||^2 / mean_tokens ||t||^2`` (states [..., h])."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"hidden-state loss needs matching, non-empty layer lists, got {len(student)} and "
                         f"{len(teacher)}")
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        s, t = s.float(), t.float().detach()
        scale = t.pow(2).sum(-1).mean().clamp_min(1e-12)
        total = total + (s - t).pow(2).sum() / scale
    return total / len(student)
