"""headstart: start small language models from the best sub-network of a pretrained teacher.

The stages are functions: :func:`prepare`, :func:`search`, :func:`extract`, :func:`train`, :func:`evaluate`,
:func:`cache_logits`, :func:`inspect`, and :func:`run` for a whole recipe (see :mod:`headstart.api`). They
load lazily, so ``import headstart`` stays light.
"""

from __future__ import annotations

from typing import Any

from headstart.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HeadstartError,
    SpecError,
    TeacherError,
)
from headstart.spec import SubnetSpec, TeacherDims

__version__ = "0.2.0"
_API = ("prepare", "search", "extract", "train", "evaluate", "cache_logits", "inspect", "run", "recipe")

__all__ = ["CheckpointError", "ConfigError", "DataError", "HeadstartError", "SpecError", "SubnetSpec", "TeacherDims",
           "TeacherError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from headstart import api

        return getattr(api, name)
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
