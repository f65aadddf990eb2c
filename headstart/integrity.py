"""A checkpoint's config must describe a model, and its weights exactly that model, before it is used.

Two checks guard every load (:func:`headstart.teacher.load_model` and ``model_config``):

* :func:`check_config`, before any weight is read: every size a family adapter reads is a positive
  integer, heads divide as the family needs, per-layer lists have one entry per layer. A config class's
  own validation error (huggingface_hub's strict dataclasses) becomes one line by :func:`config_error`.
* :func:`check_loading_info`, after transformers has read the weights: no tensor the config implies is
  missing (it would be freshly initialised), none in the files is left unused, none has another shape.
  Tied embeddings are not missing (transformers ties them and does not report them), and the keys a
  model class declares ignorable (old ``rotary_emb.inv_freq`` buffers, GPT-NeoX's masks) are not
  reported either.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from headstart.errors import CheckpointError

REQUIRED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
OPTIONAL = ("num_key_value_heads", "head_dim", "max_position_embeddings")
_FIX = "fix that field or restore the checkpoint's original config.json"
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_config(config: Any, where: str) -> None:
    """Raise one :class:`CheckpointError` line naming ``where`` (the config's file) and the first field of
    ``config`` that no model of its family can have. An unsupported family is left to
    :func:`headstart.models.get_adapter`, which names the supported ones."""
    from headstart.models import ADAPTERS

    if not any(getattr(config, "model_type", None) in adapter.model_types for adapter in ADAPTERS):
        return

    def bad(field: str, what: str) -> CheckpointError:
        return CheckpointError(f"{where}: {field} {what}; {_FIX}")

    for name in REQUIRED:
        value = getattr(config, name, None)
        if not _positive_int(value):
            raise bad(name, f"is {value!r}; it must be a positive integer")
    for name in OPTIONAL:
        value = getattr(config, name, None)
        if value is not None and not _positive_int(value):
            raise bad(name, f"is {value!r}; it must be a positive integer")
    hidden, heads = config.hidden_size, config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    if heads % kv:
        raise bad("num_attention_heads", f"({heads}) is not a multiple of num_key_value_heads ({kv})")
    derived_head_dim = getattr(config, "model_type", None) == "gpt_neox" or getattr(config, "head_dim", None) is None
    if derived_head_dim and hidden % heads:
        raise bad("hidden_size", f"({hidden}) is not a multiple of num_attention_heads ({heads}), which this "
                  "config needs for its head size")
    rotary = getattr(config, "rotary_pct", None)
    if rotary is not None and not (isinstance(rotary, (int, float)) and 0 < rotary <= 1):
        raise bad("rotary_pct", f"is {rotary!r}; it must lie in (0, 1]")
    _check_per_layer(config, bad)


def _check_per_layer(config: Any, bad: Any) -> None:
    n = config.num_hidden_layers
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) != n:
        raise bad("layer_types", f"lists {len(layer_types)} layers but num_hidden_layers is {n}")
    sizes = getattr(config, "layer_sizes", None)
    if sizes is None:
        return
    if not isinstance(sizes, list) or len(sizes) != n:
        raise bad("layer_sizes", f"must list one entry per layer ({n})")
    for i, layer in enumerate(sizes):
        values = [layer.get(k) if isinstance(layer, dict) else None
                  for k in ("num_key_value_heads", "num_attention_heads", "intermediate_size")]
        if not all(_positive_int(v) for v in values):
            raise bad(f"layer_sizes[{i}]", "needs positive integer num_key_value_heads, num_attention_heads and "
                      "intermediate_size")
        if values[1] % values[0]:
            raise bad(f"layer_sizes[{i}]", f"has {values[1]} query heads, not a multiple of its {values[0]} kv heads")


def check_layer_count(config: Any, directory: str | Path) -> None:
    """Compare ``num_hidden_layers`` with the decoder layers named in the safetensors headers of
    ``directory`` (no weight is read); a directory without readable safetensors headers is left to the
    load itself."""
    held = _header_layers(Path(directory))
    n = config.num_hidden_layers
    if held and held != set(range(n)):
        top = max(held) + 1
        gaps = sorted(set(range(top)) - held)
        what = f"layers 0-{top - 1}" + (f" without {gaps[0]}" if gaps else "")
        raise CheckpointError(
            f"{Path(directory) / 'config.json'}: num_hidden_layers is {n} but the weights hold {what} "
            f"({len(held)} layers); {_FIX}"
        )


def _header_layers(directory: Path) -> set[int]:
    """Layer indices in the tensor names of ``directory``'s safetensors files (empty when unknown)."""
    from safetensors import SafetensorError, safe_open

    index = directory / "model.safetensors.index.json"
    try:
        if index.is_file():
            names = list(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        else:
            names = []
            for file in sorted(directory.glob("*.safetensors")):
                with safe_open(file, "np") as fh:
                    names += list(fh.keys())
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return set()
    return {int(m.group(1)) for name in names if (m := _LAYER.search(name))}


def config_error(where: str, exc: BaseException) -> CheckpointError:
    """The one-line error for a config that its config class rejects (a wrong-typed or inconsistent field)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # huggingface_hub: "Validation error for field 'x':" / "TypeError: Field 'x' expected int, got str (value: ...)"
    detail = lines[-1] if lines else type(exc).__name__
    if ": " in detail and detail.split(": ", 1)[0].endswith("Error"):
        detail = detail.split(": ", 1)[1]
    return CheckpointError(f"{where} is rejected by its config class: {detail[:300].rstrip('.')}; {_FIX}")


def check_loading_info(info: dict[str, Any], where: str) -> None:
    """Refuse a checkpoint whose weights are not exactly the tensors its config implies, naming the first
    offending tensor (``info`` is transformers' ``output_loading_info`` dict)."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(info.get("mismatched_keys") or ())
    errors = [str(e).splitlines()[0] for e in info.get("error_msgs") or () if str(e).strip()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"the weights of {where} lack the tensor {missing[0]}{more} that its config implies, so it would be "
            "randomly initialised; the config does not match the weights (e.g. more layers than the files hold, "
            "or a tensor was removed): restore the checkpoint's original files"
        )
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(
            f"the weights of {where} hold the tensor {unexpected[0]}{more} that its config has no place for; the "
            "config does not match the weights (e.g. fewer layers than the files hold): restore the checkpoint's "
            "original files"
        )
    if mismatched:
        key, have, want = (list(mismatched[0]) + [None, None])[:3]
        raise CheckpointError(
            f"the tensor {key} of {where} has shape {tuple(have or ())} but its config implies {tuple(want or ())}; "
            "the config does not match the weights: restore the checkpoint's original files"
        )
    if errors:
        raise CheckpointError(f"the weights of {where} could not be loaded ({errors[0][:200]}); restore the checkpoint")
