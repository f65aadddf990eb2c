"""``headstart extract``: which sub-network (a spec file or plain sizes) and how its weights are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headstart.config.common import ORDERS, TEACHER_HELP, WEIGHT_DTYPES, check_local
from headstart.config.fields import SEED, FieldError, Section, option


@dataclass
class ExtractPaths(Section):
    """Where ``headstart extract`` reads and writes."""

    teacher: str = option(help=TEACHER_HELP)
    out: str = option(help="output directory (must not exist)")
    spec: str | None = option(None, "spec file (YAML/JSON) as written by search or SubnetSpec.save")

    def check(self) -> None:
        check_local("teacher", self.teacher)
        check_local("spec", self.spec, "file")


@dataclass
class ReconstructConfig(Section):
    """Refitting the kept layers' output projections to the teacher's outputs (off by default)."""

    enabled: bool = option(False, "refit each kept layer's o_proj/down_proj by ridge least squares so the kept "
                           "heads and neurons reproduce the teacher layer's output on the calibration data")
    ridge: float = option(1e-3, "ridge towards the plain slice, relative to the mean input energy", gt=0)
    inputs: str = option("teacher", "fit from the teacher's activations, or from the student's own (what the cut "
                         "student sees after the earlier layers' cuts)", choices=("teacher", "student"))
    passes: int = option(2, "fits from the student's inputs: passes, each on the inputs of the student refit so far",
                         ge=1)

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`headstart.reconstruct.reconstruct`."""
        return {"ridge": self.ridge, "inputs": self.inputs, "passes": self.passes if self.inputs == "student" else 1}


@dataclass
class ExtractConfig(Section):
    """``headstart extract``: cut a sub-network out of a teacher and export it as a HF checkpoint."""

    layers: str | None = option(None, "instead of --spec: number of layers, or comma-separated teacher layers")
    hidden: int | None = option(None, "instead of --spec: hidden (residual) size", ge=1)
    kv_groups: int | None = option(None, "instead of --spec: key/value groups per layer", ge=1)
    heads_per_group: int | None = option(None, "instead of --spec: query heads per key/value group", ge=1)
    mlp: int | None = option(None, "instead of --spec: MLP neurons per layer", ge=1)
    order: str = option("importance", "which indices sizes keep: the most important or the leading ones (whittle)",
                        choices=ORDERS)
    calib: str = option("builtin:shakespeare", "calibration data (importance order, reconstruction): a prepared "
                        "data directory, text files (comma-separated) or builtin:shakespeare")
    calib_samples: int = option(64, "calibration sequences", ge=1)
    calib_seq_len: int = option(256, "tokens per calibration sequence", ge=2)
    seed: int = option(0, "seed for choosing calibration windows", **SEED)
    weights_dtype: str = option("float32", "dtype of the exported weights", choices=WEIGHT_DTYPES)
    cache: bool = option(True, "reuse cached importance scores")
    reconstruct: ReconstructConfig = option(ReconstructConfig, "reconstruction of the kept layers")

    def check(self) -> None:
        if self.layers is not None:
            self.layer_choice()

    def sizes(self) -> dict[str, object]:
        """The plain sizes given (``None`` keeps the teacher's)."""
        return {"layers": self.layers, "hidden": self.hidden, "kv_groups": self.kv_groups,
                "heads_per_group": self.heads_per_group, "mlp": self.mlp}

    def layer_choice(self) -> int | list[int] | None:
        """``layers`` as a count or a list of teacher layer indices."""
        if self.layers is None:
            return None
        text = str(self.layers)
        try:
            parts = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            parts = []
        if not parts or any(p < 0 for p in parts) or ("," not in text and parts[0] < 1):
            raise FieldError("layers", f"{text!r} must be a positive count or comma-separated layer indices")
        return parts if "," in text else parts[0]
