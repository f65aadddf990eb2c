"""Cut a Hugging Face causal LM's vocabulary to the kept tokens, in place.

The input embedding and output head keep their own classes (Gemma's scaled embedding stays scaled);
only their weight rows change, so the model saves and reloads with plain transformers. Token ids in the
config and generation config (BOS, EOS, PAD) are mapped to new ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from headstart.vocab.bpe import VocabError
from headstart.vocab.kd import slice_embeddings
from headstart.vocab.order import KeptVocab

_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def trim_model_vocab(model: Any, kept: KeptVocab) -> Any:
    """Keep only the rows ``kept.kept`` of ``model``'s embedding and head (tied stays tied); return ``model``."""
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    index = torch.as_tensor(kept.kept, dtype=torch.long)
    bias = getattr(head, "bias", None) if head is not None else None
    new_embed, new_head, new_bias = slice_embeddings(
        embed.weight.data, None if head is None else (embed.weight.data if tied else head.weight.data), index, bias)
    id_map = kept.id_map
    embed.weight = torch.nn.Parameter(new_embed, requires_grad=embed.weight.requires_grad)
    embed.num_embeddings = kept.size
    if getattr(embed, "padding_idx", None) is not None:
        embed.padding_idx = _map_id(int(embed.padding_idx), id_map, "padding_idx")
    if head is not None:
        head.weight = embed.weight if tied else torch.nn.Parameter(new_head, requires_grad=head.weight.requires_grad)
        head.out_features = kept.size
        if new_bias is not None:
            head.bias = torch.nn.Parameter(new_bias, requires_grad=bias.requires_grad)
    _remap_config(model.config, id_map, kept.size)
    if getattr(model, "generation_config", None) is not None:
        _remap_config(model.generation_config, id_map, None)
    return model


def _map_id(old: int, id_map: np.ndarray, what: str) -> int:
    new = int(id_map[old]) if 0 <= old < len(id_map) else -1
    if new < 0:
        raise VocabError(f"the model's {what} {old} is not a kept token; keep it among the special tokens")
    return new


def _remap_config(config: Any, id_map: np.ndarray, vocab_size: int | None) -> None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for target in {id(config): config, id(text): text}.values():
        if vocab_size is not None and hasattr(target, "vocab_size"):
            target.vocab_size = vocab_size
        for field in _ID_FIELDS:
            value = getattr(target, field, None)
            if isinstance(value, int):
                setattr(target, field, _map_id(value, id_map, field))
            elif isinstance(value, list):
                setattr(target, field, [_map_id(int(v), id_map, field) for v in value])
