"""Model families. Adding one = one module with a :class:`ModelAdapter` subclass, registered here,
plus its tiny-config parity test."""

from __future__ import annotations

from transformers import PretrainedConfig

from headstart.errors import TeacherError
from headstart.models.base import Counts, Layout, ModelAdapter
from headstart.models.gemma import GemmaAdapter
from headstart.models.gpt_neox import GPTNeoXAdapter
from headstart.models.layerwise import LayerwiseAdapter, register
from headstart.models.llama import LlamaAdapter
from headstart.models.olmo2 import Olmo2Adapter
from headstart.models.phi3 import Phi3Adapter

ADAPTERS: tuple[type[ModelAdapter], ...] = (
    LlamaAdapter, GPTNeoXAdapter, GemmaAdapter, Phi3Adapter, Olmo2Adapter, LayerwiseAdapter,
)
register()


def supported_model_types() -> list[str]:
    """Every Hugging Face ``model_type`` headstart can cut sub-networks from."""
    return sorted(t for a in ADAPTERS for t in a.model_types if a is not LayerwiseAdapter)


def get_adapter(config: PretrainedConfig) -> ModelAdapter:
    """The adapter for ``config``'s family; a clear error for an unsupported architecture."""
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter(config)
    raise TeacherError(
        f"unsupported architecture {model_type!r}; headstart supports {', '.join(supported_model_types())}"
    )


__all__ = ["ADAPTERS", "Counts", "Layout", "ModelAdapter", "get_adapter", "supported_model_types"]
