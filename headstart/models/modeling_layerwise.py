"""Layer-wise students of the Llama family: every decoder layer keeps its own number of key/value
heads, query heads and MLP neurons; the residual width is one for all layers.

This file ships inside every layer-wise checkpoint (``auto_map`` in its ``config.json``), so
``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`` loads the student on a
machine without headstart. It therefore imports only ``torch`` and ``transformers`` and builds on
the family's own modules: the backbone (embedding, masks, rotary embedding, final norm) is the
family's ``<Family>Model`` and each layer is the family's ``<Family>DecoderLayer``, constructed
from a view of the config that answers that layer's sizes. Weight names equal the family's.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from torch import nn
from transformers import PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.llama.modeling_llama import LlamaForCausalLM

#: The per-layer config fields, each a list with one entry per decoder layer in ``layer_sizes``.
PER_LAYER = ("num_key_value_heads", "num_attention_heads", "intermediate_size")

#: family ``model_type`` -> (module, backbone class, decoder layer class) in transformers.
FAMILIES = {
    "llama": ("llama", "LlamaModel", "LlamaDecoderLayer"),
    "mistral": ("mistral", "MistralModel", "MistralDecoderLayer"),
    "qwen2": ("qwen2", "Qwen2Model", "Qwen2DecoderLayer"),
    "qwen3": ("qwen3", "Qwen3Model", "Qwen3DecoderLayer"),
}

_OWN_KEYS = ("model_type", "auto_map", "family_model_type", "layer_sizes", "architectures")


class HeadstartLayerwiseConfig(PreTrainedConfig):
    """A family config (``family_model_type``) plus ``layer_sizes``: per layer a dict of
    :data:`PER_LAYER` sizes. The top-level sizes are the largest layer's, for tools that read them."""

    model_type = "headstart_layerwise"

    def __init__(self, family_model_type: str = "llama", layer_sizes: list[dict[str, int]] | None = None,
                 **kwargs: Any) -> None:
        if family_model_type not in FAMILIES:
            raise ValueError(f"family_model_type {family_model_type!r} is not one of {sorted(FAMILIES)}")
        self.family_model_type = family_model_type
        self.layer_sizes = [dict(s) for s in layer_sizes or []]
        super().__init__(**kwargs)

    def family_config(self) -> PreTrainedConfig:
        """The family's own config of the backbone (per-layer fields hold the top-level values)."""
        data = {k: v for k, v in self.to_dict().items() if k not in _OWN_KEYS}
        top = {k: data.pop(k) for k in PER_LAYER if k in data}
        # Placeholders pass the family's checks (e.g. hidden % heads); the layers read their own sizes.
        config = CONFIG_MAPPING[self.family_model_type](**data, num_attention_heads=1, num_key_value_heads=1)
        for key, value in top.items():
            setattr(config, key, value)
        config._attn_implementation = self._attn_implementation
        return config


class LayerConfig:
    """A read-only view of the backbone config that answers one layer's sizes (and follows later
    changes of the backbone config, such as its attention implementation)."""

    def __init__(self, base: PreTrainedConfig, sizes: dict[str, int]) -> None:
        self.__dict__.update(_base=base, _sizes=dict(sizes))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key in ("_base", "_sizes"):
            raise AttributeError(key)
        sizes = self.__dict__["_sizes"]
        return sizes[key] if key in sizes else getattr(self.__dict__["_base"], key)


class HeadstartLayerwiseForCausalLM(LlamaForCausalLM):
    """The family's causal LM whose decoder layers each have their own sizes."""

    config_class = HeadstartLayerwiseConfig

    def __init__(self, config: HeadstartLayerwiseConfig) -> None:
        super(LlamaForCausalLM, self).__init__(config)  # skip building a uniform LlamaModel
        module, backbone, layer = FAMILIES[config.family_model_type]
        family = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
        base = config.family_config()
        empty = copy.copy(base)
        empty.num_hidden_layers = 0  # the backbone without layers; each is built below with its sizes
        self.model = getattr(family, backbone)(empty)
        self.model.config = base
        layer_cls = getattr(family, layer)
        self.model.layers = nn.ModuleList(
            layer_cls(LayerConfig(base, sizes), i) for i, sizes in enumerate(config.layer_sizes)
        )
        self._no_split_modules = [layer]
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


HeadstartLayerwiseConfig.register_for_auto_class()
HeadstartLayerwiseForCausalLM.register_for_auto_class("AutoModelForCausalLM")
