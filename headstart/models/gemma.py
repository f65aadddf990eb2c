"""The Gemma family: Gemma 2 (``gemma2``) and the Gemma 3 text decoder (``gemma3_text``,
``Gemma3ForCausalLM``, which is also what transformers builds from a Gemma 3 GGUF).

Llama's projections and grouped-query attention, plus what this module must know:

* four RMSNorms per block (input, post-attention, pre-feed-forward, post-feed-forward), every one
  multiplying by ``1 + weight``, all in the residual width (sliced by the kept hidden channels);
* Gemma 3's per-head q/k norms (``head_dim`` wide, which the teacher fixes: nothing to cut);
* the embedding multiplied by ``sqrt(hidden_size)`` inside the forward: a student with a cut hidden
  size multiplies by its own, smaller root, so its sliced embedding is rescaled (see
  :meth:`GemmaAdapter.slice_state_dict`);
* sliding-window and global layers (``layer_types``, with two RoPE bases in Gemma 3): the student
  config keeps the type of every kept layer (``ModelAdapter.student_config``);
* ``query_pre_attn_scalar``, the sliding window and the GeGLU activation, kept from the teacher;
* Gemma 2's attention soft-capping (inside the attention, nothing to slice) and final-logit
  soft-capping, which :meth:`~headstart.models.base.ModelAdapter.logits` applies.

FLOPs count every layer's attention over the whole context (no sliding-window discount), as for
every family: the count reads sizes, not which layers a spec keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch import nn
from transformers import PretrainedConfig

from headstart.models.base import Layout, Rules, Tensor, slice_by_rules
from headstart.models.llama import LlamaAdapter
from headstart.spec import SubnetSpec

_EMBED = "model.embed_tokens.weight"
_FINAL_NORM = "model.norm.weight"


class GemmaAdapter(LlamaAdapter):
    """Adapter for ``Gemma2ForCausalLM`` and ``Gemma3ForCausalLM``."""

    model_types = ("gemma2", "gemma3_text")
    layerwise = False  # layer-wise checkpoints are Llama modules; Gemma students stay uniform

    def _layout(self, config: PretrainedConfig) -> Layout:
        bias = bool(getattr(config, "attention_bias", False))
        return Layout(qkv_bias=bias, o_bias=bias, gated_mlp=True, mlp_bias=False, norm_bias=False,
                      qk_norm=config.model_type == "gemma3_text", norms_per_layer=4)

    def constraint(self) -> str:
        return "hidden divisible by kv_groups x heads_per_group (the Gemma configs check it)"

    def slice_state_dict(self, state: dict[str, Tensor], spec: SubnetSpec) -> dict[str, Tensor]:
        """The sliced weights, with the embedding rescaled for the student's own ``sqrt(hidden)``.

        The teacher's residual stream starts at ``E[tok] * sqrt(H)``; a student of width ``h``
        multiplies by ``sqrt(h)``. Storing ``E[:, kept] * sqrt(H / h)`` makes the student start from
        the teacher's stream on the kept channels. With tied embeddings the output head is that
        same, larger matrix, so the final norm's gain ``1 + w`` is divided by ``sqrt(H / h)``: the
        logits of a given final residual are the plain slice's. Nothing changes when ``h == H``.
        """
        h = list(spec.hidden)
        top = {_EMBED: [(1, h)], _FINAL_NORM: [(0, h)], "lm_head.weight": [(1, h)]}
        out = slice_by_rules(state, spec, top, "model.layers.", lambda i: self._layer_rules(spec, i), self.tied)
        factor = math.sqrt(self.dims.hidden_size / len(h))
        if len(h) != self.dims.hidden_size:
            out[_EMBED] = out[_EMBED] * factor  # one rounding in any dtype; no float32 copy of the table
            if self.tied:
                gain = out[_FINAL_NORM]
                out[_FINAL_NORM] = ((1.0 + gain.float()) / factor - 1.0).to(gain.dtype)
        return out

    def _layer_rules(self, spec: SubnetSpec, i: int) -> Rules:
        h = list(spec.hidden)
        return {
            **super()._layer_rules(spec, i),
            "pre_feedforward_layernorm.weight": [(0, h)],
            "post_feedforward_layernorm.weight": [(0, h)],
        }

    def hidden_norms(self, model: nn.Module) -> Iterator[nn.Module]:
        for layer in model.model.layers:
            yield layer.input_layernorm
            yield layer.post_attention_layernorm
            yield layer.pre_feedforward_layernorm
            yield layer.post_feedforward_layernorm
        yield model.model.norm
