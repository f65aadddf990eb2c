"""One precision policy for every command: what ``--dtype`` means.

``--dtype`` is the precision a command computes in (weights stay fp32 where they are trained):
``float32`` runs in full precision; ``bfloat16``/``float16`` run under autocast in that dtype;
``auto`` picks bfloat16 where the device is fast at it (CUDA with bf16 support, CPUs with
AVX512-BF16) and float32 elsewhere.
"""

from __future__ import annotations

import contextlib

import torch

from headstart.errors import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matrix products faster than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    return False


def compute_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--dtype name`` on ``device``; ``None`` means full precision."""
    if name == "auto":
        return torch.bfloat16 if fast_bf16(device) else None
    if name not in _DTYPES:
        raise ConfigError(f"--dtype {name!r} is unknown; use auto, float32, bfloat16 or float16")
    return None if name == "float32" else _DTYPES[name]


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """An autocast context in ``dtype`` on ``device`` (a no-op context for full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
