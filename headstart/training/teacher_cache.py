"""Offline teacher: top-k log-probabilities per token, computed once, keyed to their input tokens.

``headstart cache-logits`` runs the teacher over the training windows and stores, per token, the
``k`` largest log-probabilities (fp16), their token ids (uint16 when the vocabulary fits, else
int32) and the log of the remaining probability mass (fp32): 260 bytes per token at k=64, plus a
16-byte key per window. Records live in shards of ``.npy`` files (memory-mapped, never pickled);
``cache.json`` lists every file with its sha256 and the teacher, data and shape the cache belongs to.

Every window is keyed by a hash of its tokens. Training looks each batch window up by that key, so
a batch whose tokens the cache does not hold is refused (whittle replayed cached logits to the wrong
inputs); a shard whose bytes changed is refused by its checksum. One cache serves every student of
that teacher and data, in any window order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from headstart.errors import DataError
from headstart.io import atomic_dir, confined, remove_stale_temps, sha256_file
from headstart.progress import Progress, report
from headstart.training.kd_loss import TopK, default_chunk

log = logging.getLogger(__name__)

FORMAT = "headstart-teacher-cache/1"
MANIFEST = "cache.json"
PARTS = ("keys", "logp", "index", "rest")


def window_keys(batch: torch.Tensor) -> list[bytes]:
    """A 16-byte key per window (row) of ``batch`` [B, L+1]: BLAKE2b of its int64 tokens."""
    rows = batch.detach().to("cpu", torch.int64).numpy().astype("<i8")
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def bytes_per_token(k: int, vocab: int, seq_len: int) -> float:
    """Storage per cached token: fp16 log-probs, ids, fp32 remaining mass, the window key shared."""
    return k * 2 + k * index_dtype(vocab).itemsize + 4 + 16 / seq_len


def index_dtype(vocab: int) -> np.dtype:
    """uint16 ids when every id fits, else int32."""
    return np.dtype("<u2") if vocab <= 1 << 16 else np.dtype("<i4")


@torch.no_grad()
def topk_logprobs(hidden: torch.Tensor, head: torch.Tensor, k: int, vocab: int, chunk: int | None = None,
                  softcap: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k log-probs, ids and log remaining mass from hidden states [N, H] through ``head`` [V, H]
    (``softcap``: the family's final-logit soft-capping, ``cap * tanh(z / cap)``, applied first).

    Computed a chunk of tokens at a time, so full [N x V] fp32 logits never exist.
    """
    chunk = chunk or default_chunk(vocab)
    out_lp, out_id, out_rest = [], [], []
    for s in range(0, hidden.shape[0], chunk):
        logits = F.linear(hidden[s:s + chunk], head.to(hidden.dtype)).float()[:, :vocab]
        if softcap is not None:
            logits = torch.tanh(logits / softcap).mul_(softcap)
        lp = F.log_softmax(logits, dim=-1)
        vals, ids = lp.topk(k, dim=-1)
        rest = lp.scatter_(-1, ids, float("-inf")).logsumexp(-1)
        out_lp.append(vals)
        out_id.append(ids)
        out_rest.append(rest)
    return torch.cat(out_lp), torch.cat(out_id), torch.cat(out_rest)


class _ShardWriter:
    """Buffers records and writes shards of ``shard_windows`` windows into a directory."""

    def __init__(self, root: Path, shard_windows: int, id_dtype: np.dtype):
        self.root, self.shard_windows, self.id_dtype = root, shard_windows, id_dtype
        self.buf: dict[str, list[np.ndarray]] = {p: [] for p in PARTS}
        self.shards: list[dict[str, Any]] = []
        self.seen: set[bytes] = set()
        self.windows = 0

    def add(self, keys: list[bytes], lp: np.ndarray, ids: np.ndarray, rest: np.ndarray) -> None:
        for i, key in enumerate(keys):
            if key in self.seen:  # the same window twice (repeated text): one record serves both
                continue
            self.seen.add(key)
            self.buf["keys"].append(np.frombuffer(key, dtype=np.uint8))
            self.buf["logp"].append(lp[i].astype(np.float16))
            self.buf["index"].append(ids[i].astype(self.id_dtype))
            self.buf["rest"].append(rest[i].astype(np.float32))
            if len(self.buf["keys"]) >= self.shard_windows:
                self.flush()

    def flush(self) -> None:
        if not self.buf["keys"]:
            return
        n = len(self.shards)
        files = {}
        for part in PARTS:
            path = self.root / f"{n:05d}.{part}.npy"
            np.save(path, np.stack(self.buf[part]), allow_pickle=False)  # the directory is fsynced whole
            files[part] = {"file": path.name, "sha256": sha256_file(path)}
        self.shards.append({"windows": len(self.buf["keys"]), "files": files})
        self.windows += len(self.buf["keys"])
        self.buf = {p: [] for p in PARTS}


def build_cache(teacher: torch.nn.Module, batches: Iterable[torch.Tensor], out_dir: str | os.PathLike[str], *,
                k: int, vocab: int, seq_len: int, meta: dict[str, Any], shard_windows: int = 1024,
                max_windows: int | None = None, autocast: torch.autocast | None = None,
                progress: Progress | None = None) -> Path:
    """Run ``teacher`` over ``batches`` of windows [B, L+1] and write a cache to ``out_dir`` (atomically).

    ``meta`` records what the cache belongs to (teacher fingerprint, data fingerprint, ...).
    """
    out = Path(out_dir)
    if out.exists():
        raise DataError(f"{out} already exists; choose another --out or remove it")
    if not 1 <= k <= vocab:
        raise DataError(f"--k {k} must lie between 1 and the vocabulary size {vocab}")
    remove_stale_temps(out.parent, f".{out.name}.")
    from headstart.models import get_adapter

    adapter = get_adapter(teacher.config)
    head = adapter.output_head(teacher).weight
    device = head.device
    with atomic_dir(out) as tmp:
        writer = _ShardWriter(tmp, shard_windows, index_dtype(vocab))
        for batch in batches:
            if batch.shape[1] != seq_len + 1:
                raise DataError(f"windows of {batch.shape[1] - 1} tokens; the cache is for --seq-len {seq_len}")
            if max_windows is not None:
                batch = batch[: max(0, max_windows - writer.windows - len(writer.buf["keys"]))]
                if batch.shape[0] == 0:
                    break
            with torch.no_grad(), autocast or torch.autocast("cpu", enabled=False):
                hidden = adapter.hidden_states(teacher, batch[:, :-1].to(device))
            lp, ids, rest = topk_logprobs(hidden.flatten(0, 1), head, k, vocab, softcap=adapter.logit_softcap)
            shape = (batch.shape[0], seq_len)
            writer.add(window_keys(batch), lp.view(*shape, k).cpu().numpy(), ids.view(*shape, k).cpu().numpy(),
                       rest.view(shape).cpu().numpy())
            report(progress, "teacher top-k", writer.windows + len(writer.buf["keys"]), max_windows)
        writer.flush()
        manifest = {"format": FORMAT, "k": k, "vocab": vocab, "seq_len": seq_len, "windows": writer.windows,
                    "index_dtype": writer.id_dtype.str, "bytes_per_token": bytes_per_token(k, vocab, seq_len),
                    **meta, "shards": writer.shards}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("cached top-%d teacher log-probs of %d windows in %s", k, writer.windows, out)
    return out


class TeacherCache:
    """A cache written by :func:`build_cache`, opened for lookups by window tokens."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.meta = _read_meta(self.path)
        self.k, self.vocab, self.seq_len = self.meta["k"], self.meta["vocab"], self.meta["seq_len"]
        self._rows: dict[bytes, tuple[int, int]] = {}
        self._arrays: dict[int, dict[str, np.ndarray]] = {}
        for s in range(len(self.meta["shards"])):
            keys = self._load(s, "keys")
            for r, key in enumerate(keys):
                self._rows.setdefault(key.tobytes(), (s, r))

    def _load(self, shard: int, part: str) -> np.ndarray:
        """One verified, memory-mapped part of a shard (checksum and shape checked on first use)."""
        arrays = self._arrays.setdefault(shard, {})
        if part not in arrays:
            info = self.meta["shards"][shard]["files"][part]
            path = confined(self.path, info["file"])
            if not path.is_file() or sha256_file(path) != info["sha256"]:
                raise DataError(
                    f"teacher cache file {path} is missing or was modified (checksum mismatch); "
                    "rebuild the cache with `headstart cache-logits`"
                )
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"teacher cache file {path} is not a readable array ({_first_line(exc)}); "
                                "rebuild the cache with `headstart cache-logits`") from None
            windows = self.meta["shards"][shard]["windows"]
            want = _part_layout(part, windows, self.seq_len, self.k, np.dtype(self.meta["index_dtype"]))
            if (array.shape, array.dtype) != want:
                raise DataError(f"teacher cache file {path} holds {array.dtype}{list(array.shape)}, its manifest "
                                f"implies {want[1]}{list(want[0])}; rebuild the cache with `headstart cache-logits`")
            arrays[part] = array
        return arrays[part]

    def check(self, *, seq_len: int, vocab: int, data_fingerprint: str | None = None,
              teacher_fingerprint: str | None = None) -> None:
        """Refuse a cache made for other windows, another vocabulary, data or teacher."""
        wants = {"seq_len": seq_len, "vocab": vocab, "data_fingerprint": data_fingerprint,
                 "teacher_fingerprint": teacher_fingerprint}
        for key, want in wants.items():
            have = self.meta.get(key)
            if want is not None and have is not None and have != want:
                raise DataError(
                    f"teacher cache {self.path} was built with {key} {have!r}, this run has {want!r}; "
                    "rebuild it with `headstart cache-logits` for this teacher and data"
                )

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, batch: torch.Tensor) -> TopK:
        """The cached teacher for every token of ``batch`` [B, L+1], flattened to [B*L, k].

        Raises :class:`DataError` when any window's tokens are not in the cache.
        """
        if batch.shape[1] != self.seq_len + 1:
            raise DataError(f"batch windows have {batch.shape[1] - 1} tokens; the cache holds {self.seq_len}")
        parts: dict[str, list[np.ndarray]] = {"logp": [], "index": [], "rest": []}
        for i, key in enumerate(window_keys(batch)):
            where = self._rows.get(key)
            if where is None:
                raise DataError(
                    f"window {i} of the batch (tokens {batch[i, :4].tolist()}...) is not in the teacher cache "
                    f"{self.path}: it was built for other data or windows; rebuild it with `headstart cache-logits`"
                )
            for part in parts:
                parts[part].append(self._load(where[0], part)[where[1]])
        device = batch.device
        logp = torch.from_numpy(np.stack(parts["logp"])).to(device)
        index = torch.from_numpy(np.stack(parts["index"]).astype(np.int64)).to(device)
        rest = torch.from_numpy(np.stack(parts["rest"])).to(device)
        return TopK(logp.flatten(0, 1), index.flatten(0, 1), rest.flatten())


def _part_layout(part: str, windows: int, seq_len: int, k: int, ids: np.dtype) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of one part of a shard of ``windows`` windows."""
    return {"keys": ((windows, 16), np.dtype(np.uint8)), "logp": ((windows, seq_len, k), np.dtype(np.float16)),
            "index": ((windows, seq_len, k), ids), "rest": ((windows, seq_len), np.dtype(np.float32))}[part]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _read_meta(path: Path) -> dict[str, Any]:
    """The parsed ``cache.json`` of a cache, its fields checked; one :class:`DataError` line otherwise."""
    rebuild = "rebuild it with `headstart cache-logits`"
    try:
        meta = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{path} is not a teacher cache ({_first_line(exc)}); build one with `headstart cache-logits`"
                        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} cache; {rebuild}")

    def bad(field: str, what: str) -> DataError:
        return DataError(f"{path / MANIFEST}: {field} {what}; the cache was altered or damaged: {rebuild}")

    for name in ("k", "vocab", "seq_len", "windows"):
        value = meta.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "windows" else 1):
            raise bad(name, f"is {value!r}, not a positive integer")
    if meta.get("index_dtype") != index_dtype(meta["vocab"]).str:
        raise bad("index_dtype", f"is {meta.get('index_dtype')!r} but a vocabulary of {meta['vocab']} is stored as "
                  f"{index_dtype(meta['vocab']).str}")
    shards = meta.get("shards")
    if not isinstance(shards, list):
        raise bad("shards", "is not a list")
    for i, shard in enumerate(shards):
        files = shard.get("files") if isinstance(shard, dict) else None
        windows = shard.get("windows") if isinstance(shard, dict) else None
        if not isinstance(windows, int) or isinstance(windows, bool) or windows < 1:
            raise bad(f"shards[{i}].windows", f"is {windows!r}, not a positive integer")
        if not isinstance(files, dict) or any(not isinstance(files.get(p), dict) or not isinstance(
                files[p].get("file"), str) or not isinstance(files[p].get("sha256"), str) for p in PARTS):
            raise bad(f"shards[{i}].files", f"must name a file and sha256 for each of {', '.join(PARTS)}")
    if sum(shard["windows"] for shard in shards) != meta["windows"]:
        raise bad("windows", f"is {meta['windows']} but the shards hold {sum(sh['windows'] for sh in shards)}")
    return meta
