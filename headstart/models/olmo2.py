"""OLMo-2 (``olmo2``): Llama's projections and MLP with the norms moved. A block normalises the
*outputs* of its sublayers (``post_attention_layernorm``, ``post_feedforward_layernorm``) before the
residual add and has no input norms; ``q_norm`` and ``k_norm`` are RMSNorms over the whole q and k
projections (every head's channels at once), so their gains are sliced like the projection rows.

Because those two norms average over all heads, a student that drops heads renormalises q and k
over the heads it keeps: unlike Llama, dropping a head is not the same as zeroing its columns of
``o_proj``. Full-head students are exact."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from transformers import PretrainedConfig

from headstart.models.base import Layout, Rules, group_rows, head_rows
from headstart.models.llama import LlamaAdapter
from headstart.spec import SubnetSpec


class Olmo2Adapter(LlamaAdapter):
    """Adapter for ``Olmo2ForCausalLM``."""

    model_types = ("olmo2",)
    layerwise = False

    def _layout(self, config: PretrainedConfig) -> Layout:
        bias = bool(getattr(config, "attention_bias", False))
        return Layout(qkv_bias=bias, o_bias=bias, gated_mlp=True, mlp_bias=False, norm_bias=False, qk_norm=True,
                      qk_norm_full=True)

    def constraint(self) -> str:
        return "none beyond the ranges"

    def _layer_rules(self, spec: SubnetSpec, i: int) -> Rules:
        h, d = list(spec.hidden), self.dims
        q = head_rows(spec.kv_groups[i], spec.heads[i], d.heads_per_group, d.head_dim)
        kv = group_rows(spec.kv_groups[i], d.head_dim)
        rules = super()._layer_rules(spec, i)
        del rules["input_layernorm.weight"]
        return {
            **rules,
            "self_attn.q_norm.weight": [(0, q)],
            "self_attn.k_norm.weight": [(0, kv)],
            "post_feedforward_layernorm.weight": [(0, h)],
        }

    def hidden_norms(self, model: nn.Module) -> Iterator[nn.Module]:
        for layer in model.model.layers:
            yield layer.post_attention_layernorm
            yield layer.post_feedforward_layernorm
        yield model.model.norm
