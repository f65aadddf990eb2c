"""Weight reconstruction at extraction: refit each kept layer's output projections so that the kept
attention heads and MLP neurons reproduce the teacher layer's whole output on calibration tokens.

For an output projection ``W`` [out, in] whose inputs on the calibration tokens are the teacher's
activations ``X`` [N, in], a student keeps the input columns ``K`` and the output rows ``H`` (its
residual channels). Plain slicing uses ``S = W[H][:, K]``. Reconstruction solves the ridge problem

    V = argmin_V ||X_K V^T - X W_H^T||^2 + lam ||V - S||^2,    lam = ridge * mean(diag(X_K^T X_K))

in closed form, ``V^T = (X_K^T X_K + lam I)^-1 (X_K^T X W_H^T + lam S^T)``. Only the Gram matrix
``G = X^T X`` of each projection's inputs is needed (``X_K^T X_K = G[K, K]``, ``X_K^T X = G[K, :]``),
accumulated in float64 in one pass over the calibration tokens, and solved in float64. The penalty
is zero at ``S``, so the refit never has a larger calibration error than slicing; when ``K`` keeps
every column, ``V = S`` exactly. Biases are left as sliced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from headstart.spec import SubnetSpec

log = logging.getLogger(__name__)

Tensor = torch.Tensor
PARTS = ("attn", "mlp")


def collect_grams(model: nn.Module, adapter: Any, layers: list[int], tokens: Tensor,
                  batch_size: int = 4) -> dict[tuple[int, str], Tensor]:
    """``{(teacher layer, "attn"|"mlp"): X^T X}`` (float64) of the output projections' inputs of ``layers``.

    One forward of the teacher's body (no output head) over ``tokens`` [N, L], with hooks.
    """
    grams: dict[tuple[int, str], Tensor] = {}

    def hook_for(key: tuple[int, str]) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            gram = (x.T @ x).double()  # per batch in fp32, summed in fp64
            grams[key] = grams[key] + gram if key in grams else gram
        return hook

    blocks = adapter.decoder_layers(model)
    handles = []
    for t in sorted(set(layers)):
        handles.append(adapter.attn_output_proj(blocks[t]).register_forward_pre_hook(hook_for((t, "attn"))))
        handles.append(adapter.mlp_output_proj(blocks[t]).register_forward_pre_hook(hook_for((t, "mlp"))))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for s in range(0, tokens.shape[0], batch_size):
                model.base_model(input_ids=tokens[s:s + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return grams


def refit(weight: Tensor, gram: Tensor, rows: list[int], cols: list[int], ridge: float) -> Tensor:
    """The ridge refit ``V`` [len(rows), len(cols)] of ``weight`` [out, in] given the inputs' Gram [in, in]."""
    w = weight.detach().double().cpu()[torch.as_tensor(rows)]  # [H, in]
    k = torch.as_tensor(cols)
    g = gram.cpu()
    gkk = g[k][:, k]
    lam = ridge * float(gkk.diagonal().mean().clamp_min(1e-12))
    rhs = g[k] @ w.T + lam * w[:, k].T  # [K, H]
    v_t = torch.linalg.solve(gkk + lam * torch.eye(len(cols), dtype=torch.float64), rhs)
    return v_t.T.to(weight.dtype)


def output_error(weight: Tensor, gram: Tensor, rows: list[int], cols: list[int], student_weight: Tensor) -> float:
    """``||X_K V^T - X W_H^T||^2`` summed over the calibration tokens, from the Gram ``X^T X`` alone."""
    w = weight.detach().double().cpu()[torch.as_tensor(rows)]
    full = torch.zeros_like(w)
    full[:, torch.as_tensor(cols)] = student_weight.detach().double().cpu()
    d = full - w  # the error is X d^T, whose squared norm is trace(d G d^T)
    return float(torch.einsum("hi,ij,hj->", d, gram.cpu(), d))


def reconstruct(teacher: Any, spec: SubnetSpec, student: nn.Module, tokens: Tensor, ridge: float = 1e-3,
                batch_size: int = 4) -> dict[str, float]:
    """Refit ``student``'s attention and MLP output projections in place (see the module docstring).

    ``student`` is :func:`headstart.extract.build_student` of ``spec``; ``tokens`` [N, L] are the
    calibration windows. Returns the calibration errors before and after (summed over layers and
    both projections) and the FLOPs spent (teacher forward, Gram accumulation, solves).
    """
    adapter = teacher.adapter
    grams = collect_grams(teacher.model, adapter, list(spec.layers), tokens, batch_size)
    t_blocks, s_blocks = adapter.decoder_layers(teacher.model), adapter.decoder_layers(student)
    rows = list(spec.hidden)
    n_tokens = tokens.numel()
    before = after = 0.0
    flops = float(adapter.counts(None, tokens.shape[1]).flops_per_token) * n_tokens
    getters = {"attn": adapter.attn_output_proj, "mlp": adapter.mlp_output_proj}
    for i, t in enumerate(spec.layers):
        for part, cols in zip(PARTS, adapter.output_columns(spec, i)):
            w, gram = getters[part](t_blocks[t]).weight, grams[(t, part)]
            target = getters[part](s_blocks[i]).weight
            before += output_error(w, gram, rows, cols, target)
            new = refit(w, gram, rows, cols, ridge)
            after += output_error(w, gram, rows, cols, new)
            with torch.no_grad():
                target.copy_(new.to(target.device))
            d_in, k = gram.shape[0], len(cols)
            flops += 2.0 * n_tokens * d_in * d_in + 2.0 * k**3 / 3 + 2.0 * k * d_in * len(rows)
    log.info("reconstruction: calibration error %.4g -> %.4g over %d layers", before / n_tokens, after / n_tokens,
             len(spec.layers))
    return {"error_before": before / n_tokens, "error_after": after / n_tokens, "flops": flops, "ridge": ridge,
            "tokens": n_tokens}
