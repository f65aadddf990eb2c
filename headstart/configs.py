"""The options of every stage, one dataclass each: the single source of flags, YAML keys and recipe sections.

Each ``__post_init__`` checks ranges and combinations and raises :class:`ConfigError` naming the
flag. Options a command needs but a recipe fills (``--data``, ``--out``, ``--teacher`` ...) default to
``None`` and are marked ``required``; the CLI checks them (:func:`headstart.config.check_required`).
Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from headstart.config import option
from headstart.errors import ConfigError
from headstart.spec import MODES

DTYPES = ("auto", "float32", "bfloat16", "float16")
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")
GRANULARITIES = ("coarse", "fine")
LAYOUTS = ("uniform", "layer-wise")
STRATEGIES = ("evolution", "random")
KINDS = ("forward", "reverse", "jsd", "none")
BUILTIN_CORPORA = ("shakespeare",)
TEACHER_HELP = "model directory, .gguf file, hub id, or builtin:smollm2-135m"
DTYPE_HELP = "compute precision: auto = bf16 where the device is fast at it, else float32"
#: The schedule of training that starts from the teacher's weights (rungs, and a recipe's inherited runs): a 1 %
#: warmup to half of random init's peak LR; measured in bench/token_efficiency.py (README, token-efficiency).
INHERITED = {"warmup": 0.01, "lr": 5e-4}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def positive(**values: float | None) -> None:
    """:class:`ConfigError` for the first value that is set and not > 0 (names are field names)."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ConfigError(f"--{name.replace('_', '-')} {value} must be positive")


def not_negative(**values: float | None) -> None:
    """:class:`ConfigError` for the first value that is set and negative."""
    for name, value in values.items():
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} {value} must not be negative")


def check_device(device: str) -> None:
    """:class:`ConfigError` unless ``device`` is auto, cpu, mps, cuda or cuda:N."""
    if not _DEVICE.match(device):
        raise ConfigError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N")


@dataclass
class InspectConfig:
    """``headstart inspect``: what a teacher is and which sub-networks it admits."""

    teacher: str | None = option(None, TEACHER_HELP, positional=True, required=True)
    seq_len: int = option(2048, "context length for the FLOPs estimate")
    json: bool = option(False, "print JSON instead of a table")

    def __post_init__(self) -> None:
        positive(seq_len=self.seq_len)


@dataclass
class PrepareConfig:
    """``headstart prepare``: tokenize a corpus with the teacher's tokenizer into packed token shards."""

    inputs: list[str] = option([], "files, directories or globs of .txt/.md/.jsonl (optionally .gz/.zst) and "
                               ".parquet; hf:NAME[:CONFIG][@SPLIT]; builtin:shakespeare", positional=True)
    tokenizer: str | None = option(None, "the teacher whose tokenizer to use: " + TEACHER_HELP, required=True)
    out: str | None = option(None, "output directory (reused if prepared from the same inputs)", required=True)
    builtin: str | None = option(None, "an embedded corpus instead of (or besides) INPUTs", choices=BUILTIN_CORPORA)
    text_field: str = option("text", "text field of JSONL lines, Parquet columns and dataset rows")
    split_fractions: str | None = option(None, "TRAIN,SEARCH,VAL fractions, e.g. 0.96,0.02,0.02",
                                         metavar="TRAIN,SEARCH,VAL")
    search_frac: float | None = option(None, "held out for the search: a fraction, or documents if >= 1 "
                                       "(default 0.02; Shakespeare: 2 plays)")
    val_frac: float | None = option(None, "held out for validation (default 0.02; Shakespeare: 3 plays)")
    seed: int = option(0, "seed of the document split")
    workers: int | None = option(None, "tokenizer processes (default: every core)")
    shard_tokens: int = option(1 << 26, "tokens per shard file at most")
    overwrite: bool = option(False, "replace a directory prepared from other inputs")
    progress: bool = option(True, "progress bars")

    def __post_init__(self) -> None:
        positive(workers=self.workers, shard_tokens=self.shard_tokens)
        not_negative(search_frac=self.search_frac, val_frac=self.val_frac)
        if self.split_fractions and (self.search_frac is not None or self.val_frac is not None):
            raise ConfigError("give either --split-fractions or --search-frac/--val-frac, not both")

    def all_inputs(self) -> list[str]:
        """The inputs with ``--builtin`` appended; :class:`ConfigError` when there are none."""
        inputs = list(self.inputs) + ([f"builtin:{self.builtin}"] if self.builtin else [])
        if not inputs:
            raise ConfigError("give input files, directories or globs, hf:NAME, or --builtin shakespeare")
        return inputs


@dataclass
class ExtractConfig:
    """``headstart extract``: cut a sub-network out of a teacher and export it as a HF checkpoint."""

    teacher: str | None = option(None, TEACHER_HELP, required=True)
    out: str | None = option(None, "output directory (must not exist)", required=True)
    spec: str | None = option(None, "spec file (YAML/JSON) as written by search or SubnetSpec.save")
    layers: str | None = option(None, "instead of --spec: number of layers, or comma-separated teacher layers")
    hidden: int | None = option(None, "instead of --spec: hidden (residual) size")
    kv_groups: int | None = option(None, "instead of --spec: key/value groups per layer")
    heads_per_group: int | None = option(None, "instead of --spec: query heads per key/value group")
    mlp: int | None = option(None, "instead of --spec: MLP neurons per layer")
    mode: str = option("importance", "which indices sizes keep: the most important or the leading ones (whittle)",
                       choices=MODES)
    calib: str = option("builtin:shakespeare", "calibration data (importance mode, reconstruction): a prepared "
                        "data directory, text files (comma-separated) or builtin:shakespeare")
    calib_samples: int = option(64, "calibration sequences")
    calib_seq_len: int = option(256, "tokens per calibration sequence")
    seed: int = option(0, "seed for choosing calibration windows")
    weights_dtype: str = option("float32", "dtype of the exported weights", choices=WEIGHT_DTYPES)
    cache: bool = option(True, "reuse cached importance scores")
    reconstruct: bool = option(False, "refit each kept layer's o_proj/down_proj by ridge least squares so the kept "
                               "heads and neurons reproduce the teacher layer's output on the calibration data")
    ridge: float = option(1e-3, "reconstruction: ridge towards the plain slice, relative to the mean input energy")
    reconstruct_inputs: str = option("teacher", "reconstruction: fit from the teacher's activations, or from the "
                                     "student's own (what the cut student sees after the earlier layers' cuts)",
                                     choices=("teacher", "student"))
    reconstruct_passes: int = option(2, "reconstruction from the student's inputs: passes, each on the inputs of "
                                     "the student refit so far")

    def __post_init__(self) -> None:
        positive(hidden=self.hidden, kv_groups=self.kv_groups, heads_per_group=self.heads_per_group, mlp=self.mlp,
                 calib_samples=self.calib_samples, ridge=self.ridge, reconstruct_passes=self.reconstruct_passes)
        if self.calib_seq_len < 2:
            raise ConfigError(f"--calib-seq-len {self.calib_seq_len} must be at least 2")
        if self.spec and any(v is not None for v in self.sizes().values()):
            raise ConfigError("give either --spec or plain sizes (--layers/--hidden/...), not both")
        if self.layers is not None:
            self.layer_choice()

    def reconstruction(self) -> dict[str, Any]:
        """The keyword arguments of :func:`headstart.reconstruct.reconstruct` these options set."""
        passes = self.reconstruct_passes if self.reconstruct_inputs == "student" else 1
        return {"ridge": self.ridge, "inputs": self.reconstruct_inputs, "passes": passes}

    def sizes(self) -> dict[str, object]:
        """The plain sizes given (``None`` keeps the teacher's)."""
        return {"layers": self.layers, "hidden": self.hidden, "kv_groups": self.kv_groups,
                "heads_per_group": self.heads_per_group, "mlp": self.mlp}

    def layer_choice(self) -> int | list[int] | None:
        """``--layers`` as a count or a list of teacher layer indices."""
        if self.layers is None:
            return None
        text = str(self.layers)
        try:
            parts = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--layers {text!r} must be a count or comma-separated layer indices") from None
        if not parts:
            raise ConfigError(f"--layers {text!r} must be a count or comma-separated layer indices")
        if "," in text:
            return parts
        positive(layers=parts[0])
        return parts[0]


@dataclass
class SearchConfig:
    """``headstart search``: the best sub-network of the teacher in each parameter budget."""

    teacher: str | None = option(None, TEACHER_HELP, required=True)
    data: str | None = option(None, "directory prepared by `headstart prepare` (its search split)", required=True)
    out: str | None = option(None, "output directory: journal, best spec per bin, summary, plot", required=True)
    params: str | None = option(None, "parameter budgets, comma-separated (e.g. 40M,60M)")
    tolerance: float = option(0.05, "relative half-width of each budget's bin")
    bins: int | None = option(None, "instead of --params: N equal-width bins over the space's range")
    space: str | None = option(None, "search space YAML (ranges of layers/hidden/kv_groups/heads_per_group/mlp, "
                               "depth_modes, granularity, layout); defaults come from the teacher")
    granularity: str | None = option(None, "coarse: sizes only; fine: also which indices per layer "
                                     "(default: the space file's, else coarse)", choices=GRANULARITIES)
    layout: str | None = option(None, "uniform: every layer keeps the same sizes; layer-wise: each layer its own "
                                "heads and MLP size (default: the space file's, else uniform)", choices=LAYOUTS)
    order: str = option("importance", "which indices a size keeps: the most important or the leading ones",
                        choices=MODES)
    strategy: str = option("evolution", "evolution or random sampling", choices=STRATEGIES)
    evaluations: int = option(40, "evaluations per bin (per run)")
    time_limit: float | None = option(None, "wall-clock seconds per run")
    population: int = option(8, "population per bin")
    aging: bool = option(False, "regularised (aging) evolution: the oldest member leaves the population, not the worst")
    generation_size: int | None = option(None, "children per bin drawn together from the population and scored in "
                                         "parallel (under torchrun: over the ranks); 1: steady state; default: "
                                         "--population. The result does not depend on the number of ranks")
    abandon_after: float = option(0.25, "score this share of the windows first and stop a candidate clearly worse "
                                  "than the population there (0: always score every window)")
    abandon_margin: float = option(0.1, "nats above the population's worst loss that count as clearly worse")
    rungs: int = option(2, "training-aware rungs of successive halving after the untrained screen (0: none)")
    rung_candidates: int = option(4, "candidates per bin that train in rung 1")
    rung_tokens: int = option(25_000, "training tokens of rung 1 (rung r: rung_tokens x eta^(r-1), each from the cut)")
    rung_eta: int = option(2, "halving factor: 1/eta of the candidates continue to the next rung")
    rung_lr: float = option(INHERITED["lr"], "peak LR of the rung training (the schedule of a student cut from the "
                            "teacher)")
    rung_warmup: float = option(INHERITED["warmup"], "warmup of the rung training: a fraction of the steps when < 1, "
                                "else steps")
    seed: int = option(0, "seed of the search (the fitness windows are fixed)")
    baselines: bool = option(False, "also run random sampling (importance order) and random first-k (whittle)")
    resume: bool = option(False, "continue the journal in --out without re-evaluating")
    windows: int = option(16, "search-split windows per evaluation")
    seq_len: int = option(256, "tokens per window")
    batch_size: int = option(4, "windows per forward pass")
    calibration_windows: int = option(32, "train-split windows for the importance pass")
    dtype: str = option("auto", DTYPE_HELP, choices=DTYPES)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        not_negative(rungs=self.rungs, abandon_margin=self.abandon_margin)
        positive(rung_candidates=self.rung_candidates, rung_tokens=self.rung_tokens, rung_lr=self.rung_lr)
        not_negative(rung_warmup=self.rung_warmup)
        if not 0 <= self.abandon_after < 1:
            raise ConfigError(f"--abandon-after {self.abandon_after} must lie in [0, 1)")
        if self.rung_eta < 2:
            raise ConfigError(f"--rung-eta {self.rung_eta} must be at least 2")
        positive(evaluations=self.evaluations, windows=self.windows, seq_len=self.seq_len,
                 batch_size=self.batch_size, calibration_windows=self.calibration_windows, bins=self.bins,
                 time_limit=self.time_limit, generation_size=self.generation_size)
        if self.population < 2:
            raise ConfigError(f"--population {self.population} must be at least 2")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"--tolerance {self.tolerance} must lie in [0, 1)")
        if self.params is not None and self.bins is not None:
            raise ConfigError("give either --params (e.g. 40M,60M) or --bins N, not both")
        if self.params is not None:
            budgets(self.params)
        check_device(self.device)

    def check_budget(self) -> None:
        """:class:`ConfigError` unless exactly one of ``--params``/``--bins`` is given."""
        if (self.params is None) == (self.bins is None):
            raise ConfigError("give exactly one of --params (e.g. 40M,60M) or --bins N")


_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def budgets(text: str | int | float) -> list[int]:
    """``"40M,60M"`` / ``"1.5B"`` / ``"500k"`` / ``123456`` -> parameter counts."""
    out = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBgG]?)\s*", part)
        if not m:
            raise ConfigError(f"cannot read parameter budget {part.strip()!r}; write e.g. 40M, 1.5B or 500k")
        value = int(round(float(m.group(1)) * _SUFFIX[m.group(2).lower()]))
        if value <= 0:
            raise ConfigError(f"parameter budget {part.strip()!r} must be positive")
        out.append(value)
    return out


@dataclass
class CacheLogitsConfig:
    """``headstart cache-logits``: the teacher's top-k log-probabilities per training token."""

    teacher: str | None = option(None, TEACHER_HELP, required=True)
    data: str | None = option(None, "prepared data directory (headstart prepare)", required=True)
    out: str | None = option(None, "cache directory (must not exist)", required=True)
    seq_len: int = option(256, "tokens per window: the same as headstart train's")
    k: int = option(64, "log-probabilities kept per token")
    split: str = option("train", "split to cache")
    tokens: int | None = option(None, "only the windows a training run of this many tokens draws (same --seed; "
                                "any batch size or process count); default: the whole split")
    batch_size: int = option(8, "windows per teacher forward (and per training batch)")
    seed: int = option(0, "the training run's seed (with --tokens): it orders the windows")
    shard_windows: int = option(1024, "windows per shard file")
    dtype: str = option("auto", DTYPE_HELP, choices=DTYPES)
    progress: bool = option(True, "progress bar")

    def __post_init__(self) -> None:
        positive(seq_len=self.seq_len, k=self.k, tokens=self.tokens, batch_size=self.batch_size,
                 shard_windows=self.shard_windows)


@dataclass
class EvalConfig:
    """``headstart eval``: perplexity, samples, size and lm-eval tasks of an exported checkpoint."""

    checkpoint: str | None = option(None, "exported checkpoint directory", positional=True, required=True)
    data: str | None = option(None, "prepared data directory to measure perplexity on (its tokenizer must match)")
    text: str | None = option(None, "instead of --data: a UTF-8 text file to measure perplexity on")
    split: str = option("val", "split of --data")
    windows: int = option(64, "evaluation windows")
    seq_len: int = option(256, "tokens per window")
    batch_size: int = option(8, "windows per forward pass")
    prompts: str = option("To be, or not to be|My lord, the king|What light through yonder",
                          "'|'-separated prompts to sample from")
    max_new_tokens: int = option(40, "tokens to sample per prompt (0: no samples)")
    seed: int = option(0, "seed of the window choice and sampling")
    tasks: str | None = option(None, "comma-separated lm-evaluation-harness tasks (needs headstart[lm-eval])")
    limit: int | None = option(None, "lm-eval: examples per task")
    dtype: str = option("float32", DTYPE_HELP, choices=DTYPES)
    json_out: str | None = option(None, "also write the results to this JSON file", flag="--json")

    def __post_init__(self) -> None:
        positive(windows=self.windows, seq_len=self.seq_len, batch_size=self.batch_size, limit=self.limit)
        not_negative(max_new_tokens=self.max_new_tokens)
        if self.data and self.text:
            raise ConfigError("give either --data or --text, not both")
