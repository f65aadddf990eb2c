"""The student's tokenizer: the teacher's, with only the kept tokens, at contiguous new ids.

New id ``i`` is teacher token ``kept[i]``; the BPE model keeps the merges whose two parts and result are
all kept (in their original ranks), the added tokens that are kept, and the teacher's normalizer,
pre-tokenizer, decoder and post-processor with every token id remapped. Because the kept set holds the
byte alphabet and is closed under the merges, the trimmed tokenizer spells any text; a word whose
teacher token was dropped falls back to shorter pieces. It is saved as a plain Hugging Face tokenizer
directory (``tokenizer.json`` + ``tokenizer_config.json``) that ``AutoTokenizer`` loads without headstart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from headstart.io import atomic_dir
from headstart.vocab.bpe import BpeVocab, VocabError, read_bpe
from headstart.vocab.order import KeptVocab

_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def trimmed_json(vocab: BpeVocab, kept: KeptVocab) -> dict[str, Any]:
    """The ``tokenizer.json`` content of the trimmed tokenizer (a new dict; ``vocab`` is not changed)."""
    if kept.teacher_size != vocab.size:
        raise VocabError(f"the kept vocabulary belongs to a tokenizer of {kept.teacher_size} ids, this one has "
                         f"{vocab.size}; build the order from this teacher's tokenizer")
    names = [vocab.tokens[int(i)] for i in kept.kept]
    if not all(names):
        raise VocabError("the kept vocabulary names ids the tokenizer does not define; rebuild it with merge_order")
    new_id = {name: i for i, name in enumerate(names)}
    data = json.loads(json.dumps(vocab.data))  # a deep copy
    model = data["model"]
    model["vocab"] = new_id  # added tokens too, so that the model's ids are 0..V-1 without holes
    model["merges"] = [[a, b] for a, b in vocab.merges if a in new_id and b in new_id and a + b in new_id]
    if model.get("unk_token") not in (None, *new_id):
        raise VocabError(f"the unknown token {model['unk_token']!r} is not kept; keep it (it is required)")
    data["added_tokens"] = [{**a, "id": new_id[a["content"]]} for a in data.get("added_tokens") or []
                            if a["content"] in new_id]
    data["post_processor"] = _remap_processor(data.get("post_processor"), new_id)
    if data.get("padding"):
        data["padding"]["pad_id"] = _new_id(data["padding"].get("pad_token"), new_id, "padding token")
    return data


def _new_id(name: str | None, new_id: dict[str, int], what: str) -> int:
    if name not in new_id:
        raise VocabError(f"the {what} {name!r} is not kept; keep it (pass it among the special tokens)")
    return new_id[name]


def _remap_processor(node: Any, new_id: dict[str, int]) -> Any:
    """A post-processor with the ids of its special tokens remapped (TemplateProcessing, Bert/Roberta,
    Sequence); the token strings stay."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if out.get("type") == "Sequence":
        out["processors"] = [_remap_processor(p, new_id) for p in out.get("processors", [])]
    for key, entry in (out.get("special_tokens") or {}).items():
        entry = dict(entry)
        entry["ids"] = [_new_id(t, new_id, "post-processor token") for t in entry.get("tokens", [])]
        out["special_tokens"] = {**out["special_tokens"], key: entry}
    for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
        if isinstance(out.get(key), list) and len(out[key]) == 2:
            out[key] = [out[key][0], _new_id(out[key][0], new_id, "post-processor token")]
    return out


def trim_tokenizer(tokenizer: Any, kept: KeptVocab) -> Any:
    """A ``PreTrainedTokenizerFast`` with only the kept tokens (new id ``i`` = teacher id ``kept[i]``).

    The special-token roles of a transformers tokenizer (BOS, EOS, PAD, ...) carry over when kept; a chat
    template does not (a pretrained student has none of the teacher's chat tuning).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from headstart.data.fingerprint import tokenizer_fingerprint

    if kept.fingerprint != tokenizer_fingerprint(tokenizer):
        raise VocabError(f"the kept vocabulary was chosen for tokenizer {kept.fingerprint}, not this one "
                         f"({tokenizer_fingerprint(tokenizer)}); build the order from this teacher's tokenizer")
    vocab = read_bpe(tokenizer)
    backend = Tokenizer.from_str(json.dumps(trimmed_json(vocab, kept)))
    names = set(vocab.tokens[int(i)] for i in kept.kept)
    roles = {r: str(v) for r in _ROLES if (v := getattr(tokenizer, r, None)) is not None and str(v) in names}
    limit = getattr(tokenizer, "model_max_length", None)
    extra = {"model_max_length": limit} if isinstance(limit, int) else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **roles, **extra)


def save_tokenizer(tokenizer: Any, out_dir: str | os.PathLike[str], *, replace: bool = False) -> Path:
    """Save a (trimmed) tokenizer as a Hugging Face tokenizer directory, atomically; return the directory."""
    with atomic_dir(out_dir, replace=replace) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return Path(out_dir)


def student_to_teacher(ids: Any, kept: KeptVocab) -> Any:
    """Student token ids (any shape; numpy or torch) as the teacher's ids of the same tokens: ``kept[ids]``.

    Every kept token is a teacher token, so the teacher reads exactly the text the student reads (spelled
    in the student's pieces). Raises :class:`VocabError` for an id outside the student's vocabulary.
    """
    torch_ids = hasattr(ids, "numel")
    ids = ids if torch_ids else np.asarray(ids, dtype=np.int64)
    if (ids.numel() if torch_ids else ids.size) and (int(ids.min()) < 0 or int(ids.max()) >= kept.size):
        raise VocabError(f"student token ids must lie in [0, {kept.size}); these tokens come from another "
                         "tokenizer (prepare the data with the student's tokenizer)")
    if torch_ids:  # index on the tensor's device
        import torch

        return torch.as_tensor(kept.kept, device=ids.device)[ids.long()]
    return kept.kept[ids]
