"""Vocabulary-aware students: a trimmed teacher vocabulary, its tokenizer, KD over it, bits per byte.

At small sizes the embedding dominates a student (SmolLM2: 49,152 x 576 = 28.3M parameters; Gemma-3-270M:
~168M of 268M). A student may keep a subset of the teacher's tokens:

1. :func:`token_counts` counts the tokens of a prepared directory's train split;
2. :func:`merge_order` orders the teacher's vocabulary: required tokens (special and byte tokens) first,
   then by frequency, each after its merge parents, so that :meth:`VocabOrder.keep` of any prefix is
   closed under the merges and still spells any text;
3. :func:`trim_tokenizer` / :func:`save_tokenizer` build and save the student's tokenizer (new id ``i``
   is teacher id ``kept[i]``), :func:`trim_model_vocab` cuts a model's embedding and head, and
   :func:`prepare_like` tokenizes the teacher's corpus again for the student;
4. :func:`kept_log_probs` and :func:`kept_topk` give the teacher's distribution over the kept ids,
   renormalised (or :func:`folded_log_probs`: a dropped token's mass goes to its first kept piece);
   :func:`student_to_teacher` maps student windows to teacher ids of the same tokens;
5. :func:`token_bytes`, :func:`target_bytes` and :func:`bits_per_byte` compare students whose tokenizers
   differ.
"""

from __future__ import annotations

from headstart.vocab.bpe import BpeVocab, VocabError, read_bpe
from headstart.vocab.bytes import bits_per_byte, target_bytes, token_bytes
from headstart.vocab.data import prepare_like
from headstart.vocab.kd import fold_map, folded_log_probs, kept_log_probs, kept_topk, slice_embeddings, slice_rows
from headstart.vocab.model import trim_model_vocab
from headstart.vocab.order import KeptVocab, VocabOrder, merge_order, required_ids, token_counts
from headstart.vocab.tokenizer import save_tokenizer, student_to_teacher, trim_tokenizer

__all__ = [
    "BpeVocab",
    "KeptVocab",
    "VocabError",
    "VocabOrder",
    "bits_per_byte",
    "fold_map",
    "folded_log_probs",
    "kept_log_probs",
    "kept_topk",
    "merge_order",
    "prepare_like",
    "read_bpe",
    "required_ids",
    "save_tokenizer",
    "slice_embeddings",
    "slice_rows",
    "student_to_teacher",
    "target_bytes",
    "token_bytes",
    "token_counts",
    "trim_model_vocab",
    "trim_tokenizer",
]
