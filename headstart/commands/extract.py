"""``headstart extract``: cut a sub-network out of a teacher and export it as a HF checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from headstart.errors import CheckpointError, SpecError
from headstart.spec import MODES, SubnetSpec
from headstart.teacher import DTYPES, load_teacher

HELP = "extract a sub-network (from a spec file or plain sizes) and export it as a Hugging Face checkpoint"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``headstart extract``."""
    p.add_argument("--teacher", required=True, help="model directory, .gguf file, hub id, or builtin:smollm2-135m")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--spec", help="spec file (YAML/JSON) as written by search or SubnetSpec.save")
    sizes = p.add_argument_group("plain sizes (instead of --spec; omitted sizes keep the teacher's)")
    sizes.add_argument("--layers", help="number of layers, or comma-separated teacher layer indices")
    sizes.add_argument("--hidden", type=int, help="hidden (residual) size")
    sizes.add_argument("--kv-groups", type=int, help="key/value groups per layer")
    sizes.add_argument("--heads-per-group", type=int, help="query heads per key/value group")
    sizes.add_argument("--mlp", type=int, help="MLP neurons per layer")
    sizes.add_argument("--mode", choices=MODES, default="importance",
                       help="which indices to keep: the most important (default) or the leading ones (whittle)")
    calib = p.add_argument_group("calibration (importance mode)")
    calib.add_argument("--calib", default="builtin:shakespeare",
                       help="prepared data dir, text files (comma-separated), or builtin:shakespeare")
    calib.add_argument("--calib-samples", type=int, default=64, help="number of calibration sequences")
    calib.add_argument("--calib-seq-len", type=int, default=256, help="tokens per calibration sequence")
    calib.add_argument("--seed", type=int, default=0, help="seed for choosing calibration windows")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="dtype of the teacher and the student")
    p.add_argument("--no-cache", action="store_true", help="recompute importance even if cached")


def run(args: argparse.Namespace) -> int:
    """Resolve the spec, export, and print where the student is."""
    out = Path(args.out)
    if out.exists():  # fail before the (slow) teacher load
        raise CheckpointError(f"{out} already exists; choose another --out or remove it")
    size_flags = [args.layers, args.hidden, args.kv_groups, args.heads_per_group, args.mlp]
    if args.spec and any(v is not None for v in size_flags):
        raise SpecError("give either --spec or plain sizes (--layers/--hidden/...), not both")
    spec_file = SubnetSpec.load(args.spec) if args.spec else None
    teacher = load_teacher(args.teacher, dtype=args.dtype)
    if spec_file is not None:
        spec = teacher.adapter.validate(spec_file)
    else:
        spec = _spec_from_sizes(args, teacher)
    from headstart.extract import export

    export(teacher, spec, out, metadata={"mode": args.mode if spec_file is None else "spec-file"})
    counts = teacher.adapter.counts(spec)
    print(f"{out}: {spec.describe()}, {counts.params:,} parameters "
          f"({counts.params / teacher.adapter.counts().params:.1%} of the teacher)")
    return 0


def _spec_from_sizes(args: argparse.Namespace, teacher) -> SubnetSpec:
    layers: int | list[int] | None = None
    if args.layers is not None:
        try:
            parts = [int(x) for x in str(args.layers).split(",") if x.strip()]
        except ValueError:
            raise SpecError(f"--layers {args.layers!r} must be a count or comma-separated indices") from None
        layers = parts[0] if len(parts) == 1 and "," not in str(args.layers) else parts
    importance = None
    if args.mode == "importance":
        from headstart.calibration import calibration_tokens
        from headstart.importance import load_or_compute_importance

        tokens = calibration_tokens(args.calib, teacher.tokenizer, args.calib_samples, args.calib_seq_len, args.seed)
        importance = load_or_compute_importance(teacher, tokens, cache=not args.no_cache)
    spec = SubnetSpec.from_sizes(
        teacher.dims, layers=layers, hidden=args.hidden, kv_groups=args.kv_groups,
        heads_per_group=args.heads_per_group, mlp=args.mlp, mode=args.mode, importance=importance,
    )
    return teacher.adapter.validate(spec)
