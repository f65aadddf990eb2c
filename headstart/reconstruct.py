"""Weight reconstruction at extraction: refit each kept layer's output projections so that the kept
attention heads and MLP neurons reproduce the teacher layer's whole output on calibration tokens.

For an output projection ``W`` [out, in] of teacher layer ``t`` kept as student layer ``i``, the
student keeps the input columns ``K`` and the output rows ``H`` (its residual channels); plain
slicing uses ``S = W[H][:, K]``. On the calibration tokens, let ``X`` [N, in] be the teacher's inputs
to ``W`` and ``Z`` [N, |K|] the plain-sliced student's inputs to its projection (they differ once
channels or layers are dropped). Reconstruction solves the ridge problem

    V = argmin_V ||Z V^T - X W_H^T||^2 + lam ||V - S||^2,    lam = ridge * mean(diag(Z^T Z))

in closed form, ``V^T = (Z^T Z + lam I)^-1 (Z^T X W_H^T + lam S^T)``: the student's projection, fed
what the student actually computes, reproduces the teacher layer's output. ``Z^T Z`` and ``Z^T X``
are accumulated in float64 in one pass (teacher and student forward on the same tokens) and solved in
float64. The penalty is zero at ``S``, so the refit never has a larger calibration error than
slicing; when the spec keeps everything, ``Z = X`` and ``V = S`` exactly. Biases stay as sliced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headstart.spec import SubnetSpec

log = logging.getLogger(__name__)

Tensor = torch.Tensor
PARTS = ("attn", "mlp")


@dataclass
class Moments:
    """Sums over calibration tokens for one projection: ``Z^T Z``, ``Z^T X`` (float64) and ``||X W_H^T||^2``."""

    zz: Tensor
    zx: Tensor
    yy: float = 0.0


def collect_moments(teacher: Any, student: nn.Module, spec: SubnetSpec, tokens: Tensor,
                    batch_size: int = 4) -> dict[tuple[int, str], Moments]:
    """``{(student layer, "attn"|"mlp"): Moments}`` of every kept layer's output projections.

    Per batch of ``tokens`` [N, L]: the teacher's body runs (its projections' inputs are held for
    that batch only), then the student's body, whose projection hooks fold both into the sums.
    """
    adapter = teacher.adapter
    getters = {"attn": adapter.attn_output_proj, "mlp": adapter.mlp_output_proj}
    t_blocks, s_blocks = adapter.decoder_layers(teacher.model), adapter.decoder_layers(student)
    rows = torch.as_tensor(list(spec.hidden))
    held: dict[tuple[int, str], Tensor] = {}
    moments: dict[tuple[int, str], Moments] = {}

    def teacher_hook(key: tuple[int, str]) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            held[key] = args[0].detach().float().reshape(-1, args[0].shape[-1])
        return hook

    def student_hook(key: tuple[int, str], w_h: Tensor) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            z, x = args[0].detach().float().reshape(-1, args[0].shape[-1]), held.pop(key)
            zz, zx = (z.T @ z).double(), (z.T @ x).double()  # per batch in fp32, summed in fp64
            yy = float((x @ w_h.T).double().pow(2).sum())
            m = moments.get(key)
            moments[key] = Moments(zz, zx, yy) if m is None else Moments(m.zz + zz, m.zx + zx, m.yy + yy)
        return hook

    handles = []
    for i, t in enumerate(spec.layers):
        for part, get in getters.items():
            w_h = get(t_blocks[t]).weight.detach().float().index_select(0, rows.to(get(t_blocks[t]).weight.device))
            handles.append(get(t_blocks[t]).register_forward_pre_hook(teacher_hook((i, part))))
            handles.append(get(s_blocks[i]).register_forward_pre_hook(student_hook((i, part), w_h)))
    t_dev, s_dev = next(teacher.model.parameters()).device, next(student.parameters()).device
    try:
        with torch.no_grad():
            for s in range(0, tokens.shape[0], batch_size):
                batch = tokens[s:s + batch_size]
                teacher.model.base_model(input_ids=batch.to(t_dev), use_cache=False)
                student.base_model(input_ids=batch.to(s_dev), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return moments


def refit(weight: Tensor, m: Moments, rows: list[int], cols: list[int], ridge: float) -> Tensor:
    """The ridge refit ``V`` [len(rows), len(cols)] of the teacher's ``weight`` [out, in] from ``m``."""
    w = weight.detach().double().cpu()[torch.as_tensor(rows)]  # W_H [H, in]
    zz, zx = m.zz.cpu(), m.zx.cpu()
    lam = ridge * float(zz.diagonal().mean().clamp_min(1e-12))
    rhs = zx @ w.T + lam * w[:, torch.as_tensor(cols)].T  # [K, H]
    v_t = torch.linalg.solve(zz + lam * torch.eye(len(cols), dtype=torch.float64), rhs)
    return v_t.T.to(weight.dtype)


def output_error(weight: Tensor, m: Moments, rows: list[int], v: Tensor) -> float:
    """``||Z V^T - X W_H^T||^2`` summed over the calibration tokens, from the moments alone."""
    w = weight.detach().double().cpu()[torch.as_tensor(rows)]
    v = v.detach().double().cpu()
    cross = float(torch.einsum("hk,kh->", v, m.zx.cpu() @ w.T))  # trace(V Z^T X W_H^T)
    return float(torch.einsum("hk,kl,hl->", v, m.zz.cpu(), v)) - 2.0 * cross + m.yy


def reconstruct(teacher: Any, spec: SubnetSpec, student: nn.Module, tokens: Tensor, ridge: float = 1e-3,
                batch_size: int = 4) -> dict[str, float]:
    """Refit ``student``'s attention and MLP output projections in place (see the module docstring).

    ``student`` is :func:`headstart.extract.build_student` of ``spec`` (plain slices); ``tokens``
    [N, L] are the calibration windows. Returns the calibration errors per token before and after
    (summed over layers and both projections) and the FLOPs spent (both forwards, sums, solves).
    """
    adapter = teacher.adapter
    moments = collect_moments(teacher, student, spec, tokens, batch_size)
    t_blocks, s_blocks = adapter.decoder_layers(teacher.model), adapter.decoder_layers(student)
    rows, n = list(spec.hidden), tokens.numel()
    before = after = 0.0
    flops = float(adapter.counts(None, tokens.shape[1]).flops_per_token + adapter.counts(spec, tokens.shape[1])
                  .flops_per_token) * n
    getters = {"attn": adapter.attn_output_proj, "mlp": adapter.mlp_output_proj}
    for i, t in enumerate(spec.layers):
        for part, cols in zip(PARTS, adapter.output_columns(spec, i)):
            w, m, target = getters[part](t_blocks[t]).weight, moments[(i, part)], getters[part](s_blocks[i]).weight
            before += output_error(w, m, rows, target)
            new = refit(w, m, rows, cols, ridge)
            after += output_error(w, m, rows, new)
            with torch.no_grad():
                target.copy_(new.to(target.device))
            d_in, k = w.shape[1], len(cols)
            flops += 2.0 * n * (k * k + k * d_in + d_in * len(rows)) + 2.0 * k**3 / 3 + 2.0 * k * d_in * len(rows)
    log.info("reconstruction: calibration error per token %.4g -> %.4g over %d layers", before / n, after / n,
             len(spec.layers))
    return {"error_before": before / n, "error_after": after / n, "flops": flops, "ridge": ridge, "tokens": n}
