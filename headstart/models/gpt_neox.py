"""GPT-NeoX (Pythia): fused QKV laid out per head as [q|k|v], partial rotary, parallel residual,
LayerNorm with bias, untied output head (``embed_out`` on disk, ``lm_head`` in transformers 5).
Multi-head attention only: every head is its own key/value group."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from transformers import PretrainedConfig

from headstart.errors import SpecError
from headstart.models.base import Layout, ModelAdapter, Tensor, group_rows, slice_by_rules
from headstart.spec import SubnetSpec, TeacherDims


class GPTNeoXAdapter(ModelAdapter):
    """Adapter for ``GPTNeoXForCausalLM``."""

    model_types = ("gpt_neox",)

    def _dims(self, config: PretrainedConfig) -> TeacherDims:
        heads = config.num_attention_heads
        return TeacherDims(
            num_hidden_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=config.hidden_size // heads,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
        )

    def _layout(self, config: PretrainedConfig) -> Layout:
        bias = bool(getattr(config, "attention_bias", True))
        return Layout(qkv_bias=bias, o_bias=bias, gated_mlp=False, mlp_bias=True, norm_bias=True, qk_norm=False)

    def check(self, spec: SubnetSpec) -> None:
        hd = self.dims.head_dim
        heads = spec.shape.num_attention_heads
        if spec.hidden_size != heads * hd:
            raise SpecError(
                f"GPT-NeoX derives its head size from hidden_size / num_attention_heads, so a student with "
                f"hidden {spec.hidden_size} needs hidden/{hd} heads; it keeps {heads} heads "
                f"(use hidden={heads * hd} or {spec.hidden_size / hd:g} heads)"
            )

    def constraint(self) -> str:
        return f"hidden = heads x {self.dims.head_dim} (GPT-NeoX derives its head size from hidden / heads)"

    def _student_overrides(self, spec: SubnetSpec) -> dict:
        sizes = spec.sizes()
        sizes.pop("num_key_value_heads")
        return sizes

    def slice_state_dict(self, state: dict[str, Tensor], spec: SubnetSpec) -> dict[str, Tensor]:
        h, hd = list(spec.hidden), self.dims.head_dim
        top = {
            "gpt_neox.embed_in.weight": [(1, h)],
            "gpt_neox.final_layer_norm.weight": [(0, h)],
            "gpt_neox.final_layer_norm.bias": [(0, h)],
            "lm_head.weight": [(1, h)],
        }

        def layer_rules(i: int) -> dict[str, list]:
            heads = spec.kv_groups[i]  # MHA: a group is a head
            qkv = group_rows(heads, 3 * hd)  # rows of head n: [n*3*hd, (n+1)*3*hd) = its q, k, v
            cols = group_rows(heads, hd)
            neurons = list(spec.mlp[i])
            return {
                "input_layernorm.weight": [(0, h)],
                "input_layernorm.bias": [(0, h)],
                "post_attention_layernorm.weight": [(0, h)],
                "post_attention_layernorm.bias": [(0, h)],
                "attention.query_key_value.weight": [(0, qkv), (1, h)],
                "attention.query_key_value.bias": [(0, qkv)],
                "attention.dense.weight": [(0, h), (1, cols)],
                "attention.dense.bias": [(0, h)],
                "mlp.dense_h_to_4h.weight": [(0, neurons), (1, h)],
                "mlp.dense_h_to_4h.bias": [(0, neurons)],
                "mlp.dense_4h_to_h.weight": [(0, h), (1, neurons)],
                "mlp.dense_4h_to_h.bias": [(0, h)],
            }

        return slice_by_rules(state, spec, top, "gpt_neox.layers.", layer_rules, self.tied)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.gpt_neox.layers

    def attn_output_proj(self, layer: nn.Module) -> nn.Linear:
        return layer.attention.dense

    def mlp_output_proj(self, layer: nn.Module) -> nn.Linear:
        return layer.mlp.dense_4h_to_h

    def output_columns(self, spec: SubnetSpec, i: int) -> tuple[list[int], list[int]]:
        return group_rows(spec.kv_groups[i], self.dims.head_dim), list(spec.mlp[i])

    def hidden_norms(self, model: nn.Module) -> Iterator[nn.Module]:
        for layer in model.gpt_neox.layers:
            yield layer.input_layernorm
            yield layer.post_attention_layernorm
        yield model.gpt_neox.final_layer_norm
