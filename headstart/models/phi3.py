"""Phi-3 (``phi3``): Llama's blocks with fused projections. ``qkv_proj`` stacks the rows of every
query head, then every key head, then every value head; ``gate_up_proj`` stacks the gate rows, then
the up rows. Grouped-query attention as in Llama (query head ``n`` reads key/value group
``n // heads_per_group``); the head size is the teacher's ``head_dim``, written into the student's
config (Phi-3 would otherwise derive it from ``hidden_size / num_attention_heads``)."""

from __future__ import annotations

from transformers import PretrainedConfig

from headstart.models.base import Layout, Rules, group_rows, head_rows
from headstart.models.llama import LlamaAdapter
from headstart.spec import SubnetSpec


class Phi3Adapter(LlamaAdapter):
    """Adapter for ``Phi3ForCausalLM``."""

    model_types = ("phi3",)
    layerwise = False

    def _layout(self, config: PretrainedConfig) -> Layout:
        return Layout(qkv_bias=False, o_bias=False, gated_mlp=True, mlp_bias=False, norm_bias=False, qk_norm=False)

    def constraint(self) -> str:
        return "none beyond the ranges"

    def _layer_rules(self, spec: SubnetSpec, i: int) -> Rules:
        h, d = list(spec.hidden), self.dims
        q = head_rows(spec.kv_groups[i], spec.heads[i], d.heads_per_group, d.head_dim)
        kv = group_rows(spec.kv_groups[i], d.head_dim)
        q_rows, kv_rows = d.num_attention_heads * d.head_dim, d.num_key_value_heads * d.head_dim
        qkv = q + [q_rows + r for r in kv] + [q_rows + kv_rows + r for r in kv]
        neurons = list(spec.mlp[i])
        gate_up = neurons + [d.intermediate_size + n for n in neurons]
        return {
            "self_attn.qkv_proj.weight": [(0, qkv), (1, h)],
            "self_attn.o_proj.weight": [(0, h), (1, q)],
            "mlp.gate_up_proj.weight": [(0, gate_up), (1, h)],
            "mlp.down_proj.weight": [(0, h), (1, neurons)],
            "input_layernorm.weight": [(0, h)],
            "post_attention_layernorm.weight": [(0, h)],
        }
