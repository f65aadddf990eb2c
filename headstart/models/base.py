"""The one interface every model family implements.

An adapter knows, for one family of Hugging Face causal LMs: the teacher's dimensions, the
family's constraints on a legal student config, how to slice a teacher state dict by a
:class:`~headstart.spec.SubnetSpec`, the student's config, where the calibration hooks go, and
the analytic parameter/FLOP count. It is the only code that knows the family's weight names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from headstart.errors import SpecError
from headstart.models.modeling_layerwise import HeadstartLayerwiseConfig
from headstart.spec import LayerSizes, Shape, SubnetSpec, TeacherDims

Tensor = torch.Tensor

# Config keys that belong to the source checkpoint, not to a student built from it.
_DROP_CONFIG_KEYS = ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version", "auto_map")


@dataclass(frozen=True)
class Layout:
    """What a family's blocks contain, for analytic counting."""

    qkv_bias: bool  # biases on q/k/v projections
    o_bias: bool  # bias on the attention output projection
    gated_mlp: bool  # gate/up/down (3 matrices) vs up/down (2)
    mlp_bias: bool  # biases on MLP projections
    norm_bias: bool  # LayerNorm (weight+bias) vs RMSNorm (weight)
    qk_norm: bool  # RMSNorm on q and k (Qwen3, Gemma 3: per head; OLMo-2: over the whole projection)
    qk_norm_full: bool = False  # the q/k norms span every head's channels (OLMo-2), not one head_dim
    norms_per_layer: int = 2  # residual-width norms per block (Gemma: 4, pre and post each sublayer)


@dataclass(frozen=True)
class Counts:
    """Analytic size of a (sub-)network."""

    params: int  # every parameter, tied embeddings counted once
    embedding_params: int  # input embedding (+ untied output head)
    flops_per_token: int  # forward FLOPs per token at the given context length

    @property
    def non_embedding_params(self) -> int:
        """Parameters outside the embedding and output head."""
        return self.params - self.embedding_params


class ModelAdapter(ABC):
    """Family-specific knowledge behind one interface. Construct with the teacher's config."""

    #: Hugging Face ``model_type`` values this adapter handles.
    model_types: tuple[str, ...] = ()
    #: Whether layer-wise specs export (as :mod:`headstart.models.modeling_layerwise` checkpoints).
    layerwise: bool = False

    def __init__(self, config: PretrainedConfig) -> None:
        self.config = config
        self.dims = self._dims(config)
        self.layout = self._layout(config)
        self.tied = bool(getattr(config, "tie_word_embeddings", False))

    # -- family facts --------------------------------------------------------------------------
    @abstractmethod
    def _dims(self, config: PretrainedConfig) -> TeacherDims: ...

    @abstractmethod
    def _layout(self, config: PretrainedConfig) -> Layout: ...

    def check(self, spec: SubnetSpec) -> None:
        """Raise :class:`SpecError` if the family cannot express ``spec`` (indices already valid).

        Families with constraints that their config class does not enforce override this.
        """

    def constraint(self) -> str:
        """Human-readable shape constraint beyond the index ranges (shown by ``headstart inspect``)."""
        return "none beyond the ranges"

    @abstractmethod
    def slice_state_dict(self, state: dict[str, Tensor], spec: SubnetSpec) -> dict[str, Tensor]:
        """The student's state dict: teacher tensors indexed by ``spec`` (every key mapped)."""

    @abstractmethod
    def _student_overrides(self, spec: SubnetSpec) -> dict:
        """Config fields that change for the student."""

    # -- module access for calibration hooks ---------------------------------------------------
    @abstractmethod
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList: ...

    @abstractmethod
    def attn_output_proj(self, layer: nn.Module) -> nn.Linear:
        """The linear layer whose input is the concatenation of the attention heads."""

    @abstractmethod
    def mlp_output_proj(self, layer: nn.Module) -> nn.Linear:
        """The linear layer whose input is the MLP's neuron activations."""

    @abstractmethod
    def output_columns(self, spec: SubnetSpec, i: int) -> tuple[list[int], list[int]]:
        """Teacher input columns that student layer ``i`` keeps of its attention and MLP output projections."""

    @abstractmethod
    def hidden_norms(self, model: nn.Module) -> Iterator[nn.Module]:
        """Every norm whose output lives in the residual (hidden) space."""

    # -- the model boundary: final hidden states, output head, logit transform --------------------
    def hidden_states(self, model: nn.Module, input_ids: Tensor) -> Tensor:
        """Final hidden states ``[B, S, H]`` of ``model`` (after its final norm), without a KV cache."""
        return model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state

    def output_head(self, model: nn.Module) -> nn.Module:
        """The linear output layer of ``model`` (hidden states to vocabulary scores)."""
        return model.get_output_embeddings()

    @property
    def logit_softcap(self) -> float | None:
        """The family's final-logit soft-capping (``cap * tanh(z / cap)``), or ``None`` when logits are linear."""
        cap = getattr(self.config, "final_logit_softcapping", None)
        return float(cap) if cap else None

    def logits(self, model: nn.Module, hidden: Tensor) -> Tensor:
        """Vocabulary logits of ``model`` from its final hidden states, as the family's forward computes them."""
        z = self.output_head(model)(hidden)
        cap = self.logit_softcap
        return z if cap is None else cap * torch.tanh(z / cap)

    # -- shared behaviour ----------------------------------------------------------------------
    def validate(self, spec: SubnetSpec) -> SubnetSpec:
        """Generic index checks, the family's own constraints, and its config class's checks."""
        self.student_config(spec)
        return spec

    def student_config(self, spec: SubnetSpec) -> PretrainedConfig:
        """A config of the teacher's family describing the student (validated by transformers)."""
        spec.validate(self.dims)
        if not (spec.uniform or self.layerwise):
            raise SpecError(
                f"{type(self.config).__name__} students keep the same sizes in every layer, but this spec is "
                f"layer-wise ({spec.describe()}); use layout: uniform, or a Llama-family teacher"
            )
        self.check(spec)
        data = self.config.to_dict()
        for key in _DROP_CONFIG_KEYS:
            data.pop(key, None)
        layer_types = data.get("layer_types")
        if isinstance(layer_types, list) and len(layer_types) == self.dims.num_hidden_layers:
            data["layer_types"] = [layer_types[i] for i in spec.layers]
        if "max_window_layers" in data:
            data["max_window_layers"] = min(data["max_window_layers"], spec.num_hidden_layers)
        data.update(self._student_overrides(spec))
        model_type = data.pop("model_type")
        try:
            if spec.uniform:
                return AutoConfig.for_model(model_type, **data)
            config = HeadstartLayerwiseConfig(family_model_type=model_type, **data)
            config.family_config()  # the family's own checks of everything but the per-layer sizes
            return config
        except (ValueError, TypeError, StrictDataclassClassValidationError) as exc:  # the config class rejects it
            msg = str(exc.__cause__ or exc).strip().splitlines()[0]
            raise SpecError(f"{type(self.config).__name__} rejects {spec.describe()}: {msg}") from None

    def counts(self, shape: Shape | None = None, seq_len: int = 2048) -> Counts:
        """Parameters and forward FLOPs per token of a student of ``shape`` (the teacher when ``None``).

        FLOPs count 2 per multiply-accumulate of every matrix (the output head included) plus
        attention scores and weighted values, ``4 * seq_len * heads * head_dim`` per layer (no
        causal discount), as in Kaplan et al.; norms, activations and softmax are ignored.
        """
        d = self.dims
        s = d.shape if shape is None else shape
        h, v = s.hidden_size, d.vocab_size
        per_layer = [self._layer_counts(h, layer, seq_len) for layer in (s.layers()[:1] if s.uniform else s.layers())]
        reps = s.num_hidden_layers if s.uniform else 1
        params, flops = reps * sum(p for p, _ in per_layer), reps * sum(f for _, f in per_layer)
        norm = h * (2 if self.layout.norm_bias else 1)
        embedding = v * h * (1 if self.tied else 2)
        params += embedding + norm
        flops += 2 * v * h
        return Counts(params=params, embedding_params=embedding, flops_per_token=flops)

    def _layer_counts(self, h: int, layer: LayerSizes, seq_len: int) -> tuple[int, int]:
        """Parameters and forward FLOPs per token of one decoder layer of residual width ``h``."""
        lo, hd = self.layout, self.dims.head_dim
        q_out, kv_out, m = layer.num_attention_heads * hd, layer.num_key_value_heads * hd, layer.intermediate_size
        attn_mat = h * q_out + 2 * h * kv_out + q_out * h
        attn_vec = (q_out + 2 * kv_out if lo.qkv_bias else 0) + (h if lo.o_bias else 0)
        if lo.qk_norm:
            attn_vec += q_out + kv_out if lo.qk_norm_full else 2 * hd
        mlp_mat = (3 if lo.gated_mlp else 2) * h * m
        mlp_vec = ((2 * m if lo.gated_mlp else m) + h) if lo.mlp_bias else 0
        norm = h * (2 if lo.norm_bias else 1)
        params = attn_mat + attn_vec + mlp_mat + mlp_vec + lo.norms_per_layer * norm
        return params, 2 * (attn_mat + mlp_mat) + 4 * seq_len * q_out


def index(t: Tensor, dim: int, idx: list[int] | tuple[int, ...]) -> Tensor:
    """``t`` restricted to ``idx`` along ``dim``: ``t`` itself when ``idx`` keeps every entry in order
    (no copy), else a fresh contiguous tensor. :func:`headstart.extraction.build_student` copies what
    is still shared unless told not to."""
    if len(idx) == t.shape[dim] and all(i == j for i, j in enumerate(idx)):
        return t.contiguous()
    return t.index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=t.device)).contiguous()


def head_rows(groups: tuple[int, ...], heads: tuple[tuple[int, ...], ...], hpg: int, head_dim: int) -> list[int]:
    """Row indices of the kept query heads of a q projection, grouped as transformers' GQA expects."""
    rows: list[int] = []
    for g, offsets in zip(groups, heads):
        for j in offsets:
            start = (g * hpg + j) * head_dim
            rows.extend(range(start, start + head_dim))
    return rows


def group_rows(groups: tuple[int, ...], head_dim: int) -> list[int]:
    """Row indices of the kept key/value heads of a k or v projection."""
    return [g * head_dim + i for g in groups for i in range(head_dim)]


Rules = dict[str, list[tuple[int, list[int]]]]  # weight name -> [(dim, kept indices), ...]

# Output heads that share the input embedding's storage when embeddings are tied.
_TIED_HEADS = ("lm_head.weight",)


def slice_by_rules(
    state: dict[str, Tensor],
    spec: SubnetSpec,
    top: Rules,
    layer_prefix: str,
    layer_rules: Callable[[int], Rules],
    tied: bool,
) -> dict[str, Tensor]:
    """Slice a teacher state dict into the student's.

    ``top`` gives the rules of weights outside the decoder layers; ``layer_rules(i)`` those of
    student layer ``i``, whose weights come from teacher layer ``spec.layers[i]``. Every weight of
    a kept layer and every top-level weight must have a rule: an unknown weight is refused rather
    than silently dropped (whittle's extraction dropped what it did not know).
    """
    out: dict[str, Tensor] = {}
    by_layer: dict[int, list[tuple[str, Tensor]]] = {}
    for key, tensor in state.items():
        if key.startswith(layer_prefix):
            layer, _, suffix = key[len(layer_prefix):].partition(".")
            by_layer.setdefault(int(layer), []).append((suffix, tensor))
        elif tied and key in _TIED_HEADS:
            continue  # the student ties it to its (sliced) embedding
        elif key in top:
            out[key] = _slice(tensor, top[key])
        else:
            raise SpecError(f"don't know how to slice teacher weight {key!r}; this checkpoint variant is unsupported")
    for i, layer in enumerate(spec.layers):
        rules = layer_rules(i)
        for suffix, tensor in by_layer.get(layer, []):
            if suffix not in rules:
                raise SpecError(
                    f"don't know how to slice teacher weight {layer_prefix}{layer}.{suffix!r}; "
                    "this checkpoint variant is unsupported"
                )
            out[f"{layer_prefix}{i}.{suffix}"] = _slice(tensor, rules[suffix])
    return out


def _slice(tensor: Tensor, rules: list[tuple[int, list[int]]]) -> Tensor:
    for dim, idx in rules:
        tensor = index(tensor, dim, idx)
    return tensor
