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

With ``inputs="student"`` the inputs are the student's own activations ``Z`` [N, K] at that projection
(after the earlier layers' cuts), and the target stays the teacher's output ``X W_H^T``:

    V^T = (Z^T Z + lam I)^-1 (Z^T X W_H^T + lam S^T)

which needs ``Z^T Z``, the cross term ``Z^T X`` and (for the error) ``X^T X``, accumulated while the
teacher and the student run over the same calibration batch. Every layer is refit from the inputs of
one student forward, so ``passes`` > 1 repeats the refit on the inputs of the student refit so far
(each pass is ridge-anchored at the weights it starts from, so it never raises the error it sees).
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
INPUTS = ("teacher", "student")


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


def collect_cross(teacher: nn.Module, student: nn.Module, adapter: Any, layers: list[int], tokens: Tensor,
                  batch_size: int = 4) -> dict[tuple[int, str], Moments]:
    """Per student layer ``i`` (teacher layer ``layers[i]``) and part: the :class:`Moments` of the student's
    inputs ``Z`` and the teacher's ``X`` at the output projections, on the same calibration tokens."""
    seen: dict[tuple[int, str], Tensor] = {}  # the teacher's inputs of the batch in flight
    moments: dict[tuple[int, str], Moments] = {}

    def teacher_hook(key: tuple[int, str]) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            seen[key] = args[0].detach().float().reshape(-1, args[0].shape[-1])
        return hook

    def student_hook(i: int, part: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            z, x = args[0].detach().float().reshape(-1, args[0].shape[-1]), seen[(layers[i], part)]
            new = Moments((z.T @ z).double(), (z.T @ x).double(), (x.T @ x).double())
            moments[(i, part)] = moments[(i, part)] + new if (i, part) in moments else new
        return hook

    getters = {"attn": adapter.attn_output_proj, "mlp": adapter.mlp_output_proj}
    t_blocks, s_blocks = adapter.decoder_layers(teacher), adapter.decoder_layers(student)
    handles = [getters[part](t_blocks[t]).register_forward_pre_hook(teacher_hook((t, part)))
               for t in sorted(set(layers)) for part in PARTS]
    handles += [getters[part](s_blocks[i]).register_forward_pre_hook(student_hook(i, part))
                for i in range(len(layers)) for part in PARTS]
    try:
        with torch.no_grad():
            for s in range(0, tokens.shape[0], batch_size):
                for model in (teacher, student):  # the teacher first: the student's hooks read its inputs
                    device = next(model.parameters()).device
                    model.base_model(input_ids=tokens[s:s + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return moments


@dataclass
class Moments:
    """Second moments of a projection's inputs: the student's ``Z^T Z`` [K, K], ``Z^T X`` [K, in] against
    the teacher's inputs ``X``, and ``X^T X`` [in, in] (float64, summed over tokens)."""

    zz: Tensor
    zx: Tensor
    xx: Tensor

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.zz + other.zz, self.zx + other.zx, self.xx + other.xx)

    @classmethod
    def of_teacher(cls, gram: Tensor, cols: list[int]) -> Moments:
        """The moments when the student's inputs are the teacher's own, columns ``cols`` kept."""
        k = torch.as_tensor(cols)
        return cls(gram[k][:, k], gram[k], gram)


def refit(weight: Tensor, m: Moments, rows: list[int], start: Tensor, ridge: float) -> Tensor:
    """The ridge refit ``V`` [len(rows), K] of the teacher's ``weight`` [out, in], anchored at ``start``."""
    w = weight.detach().double().cpu()[torch.as_tensor(rows)]  # [H, in]
    zz = m.zz.cpu()
    lam = ridge * float(zz.diagonal().mean().clamp_min(1e-12))
    rhs = m.zx.cpu() @ w.T + lam * start.detach().double().cpu().T  # [K, H]
    v_t = torch.linalg.solve(zz + lam * torch.eye(zz.shape[0], dtype=torch.float64), rhs)
    return v_t.T.to(weight.dtype)


def output_error(weight: Tensor, m: Moments, rows: list[int], student_weight: Tensor) -> float:
    """``||Z V^T - X W_H^T||^2`` summed over the calibration tokens, from the moments alone."""
    w = weight.detach().double().cpu()[torch.as_tensor(rows)]
    v = student_weight.detach().double().cpu()
    return float(torch.einsum("hk,kl,hl->", v, m.zz.cpu(), v) - 2 * torch.einsum("hk,ki,hi->", v, m.zx.cpu(), w)
                 + torch.einsum("hi,ij,hj->", w, m.xx.cpu(), w))


def reconstruct(teacher: Any, spec: SubnetSpec, student: nn.Module, tokens: Tensor, ridge: float = 1e-3,
                batch_size: int = 4, inputs: str = "teacher", passes: int = 1) -> dict[str, Any]:
    """Refit ``student``'s attention and MLP output projections in place (see the module docstring).

    ``student`` is :func:`headstart.extraction.build_student` of ``spec``; ``tokens`` [N, L] are the
    calibration windows; ``inputs`` is ``teacher`` (its activations) or ``student`` (the student's own,
    ``passes`` times). Returns the calibration errors before the first pass and after the last (summed
    over layers and both projections, per token, on the inputs that pass saw) and the FLOPs spent
    (forwards, moments, solves).
    """
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, not {inputs!r}")
    if passes < 1 or (inputs == "teacher" and passes != 1):
        raise ValueError("passes must be at least 1 (and 1 with the teacher's inputs, which never change)")
    adapter = teacher.adapter
    t_blocks, s_blocks = adapter.decoder_layers(teacher.model), adapter.decoder_layers(student)
    rows, n_tokens = list(spec.hidden), tokens.numel()
    getters = {"attn": adapter.attn_output_proj, "mlp": adapter.mlp_output_proj}
    flops, errors = 0.0, []
    for _ in range(passes):
        flops += float(adapter.counts(None, tokens.shape[1]).flops_per_token) * n_tokens
        if inputs == "student":
            flops += float(adapter.counts(spec.shape, tokens.shape[1]).flops_per_token) * n_tokens
            moments = collect_cross(teacher.model, student, adapter, list(spec.layers), tokens, batch_size)
        else:
            grams = collect_grams(teacher.model, adapter, list(spec.layers), tokens, batch_size)
        before = after = 0.0
        for i, t in enumerate(spec.layers):
            for part, cols in zip(PARTS, adapter.output_columns(spec, i)):
                w, target = getters[part](t_blocks[t]).weight, getters[part](s_blocks[i]).weight
                m = moments[(i, part)] if inputs == "student" else Moments.of_teacher(grams[(t, part)], cols)
                before += output_error(w, m, rows, target)
                new = refit(w, m, rows, target, ridge)
                after += output_error(w, m, rows, new)
                with torch.no_grad():
                    target.copy_(new.to(target.device))
                d_in, k = m.xx.shape[0], len(cols)
                moments_per_token = d_in * d_in + (k * d_in + k * k if inputs == "student" else 0)
                flops += 2.0 * n_tokens * moments_per_token + 2.0 * k**3 / 3 + 2.0 * k * d_in * len(rows)
        errors.append((before / n_tokens, after / n_tokens))
    log.info("reconstruction (%s inputs, %d pass(es)): calibration error %.4g -> %.4g over %d layers", inputs,
             passes, errors[0][0], errors[-1][1], len(spec.layers))
    return {"error_before": errors[0][0], "error_after": errors[-1][1], "flops": flops, "ridge": ridge,
            "tokens": n_tokens, "inputs": inputs, "passes": passes}
