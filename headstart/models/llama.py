"""The Llama family: Llama 2/3, Mistral, SmolLM/SmolLM2 (tied embeddings), Qwen2 (q/k/v biases),
Qwen3 (per-head q/k norms). Separate q/k/v/o projections, gated SiLU MLP, RMSNorm, pre-norm."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from transformers import PretrainedConfig

from headstart.models.base import Layout, ModelAdapter, Rules, Tensor, group_rows, head_rows, slice_by_rules
from headstart.spec import SubnetSpec, TeacherDims


class LlamaAdapter(ModelAdapter):
    """Adapter for ``LlamaForCausalLM`` and its close relatives."""

    model_types = ("llama", "mistral", "qwen2", "qwen3")
    layerwise = True

    def _dims(self, config: PretrainedConfig) -> TeacherDims:
        heads = config.num_attention_heads
        return TeacherDims(
            num_hidden_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            num_attention_heads=heads,
            num_key_value_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
        )

    def _layout(self, config: PretrainedConfig) -> Layout:
        family = getattr(config, "family_model_type", config.model_type)  # a layer-wise student names its family
        qwen2 = family == "qwen2"
        return Layout(
            qkv_bias=qwen2 or bool(getattr(config, "attention_bias", False)),
            o_bias=(not qwen2) and bool(getattr(config, "attention_bias", False)),
            gated_mlp=True,
            mlp_bias=bool(getattr(config, "mlp_bias", False)),
            norm_bias=False,
            qk_norm=family == "qwen3",
        )

    def constraint(self) -> str:
        if self.config.model_type == "llama":
            return "hidden divisible by kv_groups x heads_per_group (LlamaConfig checks it)"
        return super().constraint()

    def _student_overrides(self, spec: SubnetSpec) -> dict:
        return {**spec.sizes(), "head_dim": self.dims.head_dim}

    def slice_state_dict(self, state: dict[str, Tensor], spec: SubnetSpec) -> dict[str, Tensor]:
        h = list(spec.hidden)
        top = {
            "model.embed_tokens.weight": [(1, h)],
            "model.norm.weight": [(0, h)],
            "lm_head.weight": [(1, h)],
        }
        return slice_by_rules(state, spec, top, "model.layers.", lambda i: self._layer_rules(spec, i), self.tied)

    def _layer_rules(self, spec: SubnetSpec, i: int) -> Rules:
        """Slicing rules of student layer ``i``: weight suffix -> [(dim, kept indices), ...]."""
        h, d = list(spec.hidden), self.dims
        q = head_rows(spec.kv_groups[i], spec.heads[i], d.heads_per_group, d.head_dim)
        kv = group_rows(spec.kv_groups[i], d.head_dim)
        neurons = list(spec.mlp[i])
        return {
            "self_attn.q_proj.weight": [(0, q), (1, h)],
            "self_attn.q_proj.bias": [(0, q)],
            "self_attn.k_proj.weight": [(0, kv), (1, h)],
            "self_attn.k_proj.bias": [(0, kv)],
            "self_attn.v_proj.weight": [(0, kv), (1, h)],
            "self_attn.v_proj.bias": [(0, kv)],
            "self_attn.o_proj.weight": [(0, h), (1, q)],
            "self_attn.o_proj.bias": [(0, h)],
            "self_attn.q_norm.weight": [],  # per head (head_dim wide): nothing to cut
            "self_attn.k_norm.weight": [],
            "mlp.gate_proj.weight": [(0, neurons), (1, h)],
            "mlp.gate_proj.bias": [(0, neurons)],
            "mlp.up_proj.weight": [(0, neurons), (1, h)],
            "mlp.up_proj.bias": [(0, neurons)],
            "mlp.down_proj.weight": [(0, h), (1, neurons)],
            "mlp.down_proj.bias": [(0, h)],
            "input_layernorm.weight": [(0, h)],
            "post_attention_layernorm.weight": [(0, h)],
        }

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def attn_output_proj(self, layer: nn.Module) -> nn.Linear:
        return layer.self_attn.o_proj

    def mlp_output_proj(self, layer: nn.Module) -> nn.Linear:
        return layer.mlp.down_proj

    def output_columns(self, spec: SubnetSpec, i: int) -> tuple[list[int], list[int]]:
        q = head_rows(spec.kv_groups[i], spec.heads[i], self.dims.heads_per_group, self.dims.head_dim)
        return q, list(spec.mlp[i])

    def hidden_norms(self, model: nn.Module) -> Iterator[nn.Module]:
        for layer in model.model.layers:
            yield layer.input_layernorm
            yield layer.post_attention_layernorm
        yield model.model.norm

