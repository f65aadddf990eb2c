"""Names and choices shared by several stages' options (each defined here once; no torch)."""

from __future__ import annotations

import re
from pathlib import Path

from headstart.config.fields import FieldError

DTYPES = ("auto", "float32", "bfloat16", "float16")
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")
DTYPE_HELP = "compute precision: auto = bf16 where the device is fast at it, else float32"
ORDERS = ("importance", "first-k")  # which indices a size keeps: calibration scores, or the leading ones
BUILTIN_TEACHERS = ("smollm2-135m", "gemma3-270m")  # gemma3-270m: under the Gemma Terms of Use
BUILTIN_CORPORA = ("shakespeare",)
TEACHER_HELP = "model directory, .gguf file, hub id, or builtin:" + " | builtin:".join(BUILTIN_TEACHERS)
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str, name: str = "device") -> None:
    """:class:`FieldError` unless ``device`` is auto, cpu, mps, cuda or cuda:N."""
    if not _DEVICE.match(device):
        raise FieldError(name, f"{device!r} is not a device; use auto, cpu, cuda or cuda:N")


def check_local(name: str, value: str | None, kind: str = "any") -> None:
    """:class:`FieldError` when ``value`` names a local ``kind`` (``file``, ``dir``, ``any``) that does not exist.

    Cheap and torch-free, so a mistyped path fails in a blink; ``builtin:`` names and hub ids (``org/name``)
    are left to the loaders.
    """
    if value is None:
        return
    text = str(value).removeprefix("random:")
    if text.startswith("builtin:"):
        return
    path = Path(text).expanduser()
    if path.exists():
        if kind == "dir" and not path.is_dir():
            raise FieldError(name, f"{text} is a file; give a directory")
        if kind == "file" and not path.is_file():
            raise FieldError(name, f"{text} is a directory; give a file")
        return
    looks_local = kind != "any" or text.startswith((".", "/", "~")) or text.endswith((".gguf", ".yaml", ".yml",
                                                                                        ".json")) or text.count("/") > 1
    if looks_local:
        raise FieldError(name, f"{text} does not exist")
