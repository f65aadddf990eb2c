"""KD train-step throughput and MFU of headstart's real training step, ready for a GPU.

Runs :func:`headstart.training.step.train_step` (student forward, teacher forward under ``no_grad``,
the chunked KD loss, backward, clipping, AdamW) on random tokens and reports tokens/s and MFU:
analytic FLOPs per step (3 × the student's forward FLOPs per token + the teacher's forward FLOPs
per token, from the family adapters) over the measured step time over the device's peak.

Sizes:

* ``50m``: the builtin teacher SmolLM2-135M (random weights of its shape if it is not cached) → a
  ~50M Llama student; 8 × 2048 tokens per step.
* ``300m``: a 1B-shaped Llama teacher (Llama-3.2-1B shapes, random weights) → a ~300M student;
  8 × 2048 tokens per step.
* ``tiny``: a few-layer teacher → a smaller student, 2 × 32 tokens, for CPUs and the test suite.

Both peaks are reported where known: the device's dense bf16 peak from its datasheet (H100/H200
SXM 989 TFLOP/s, H100 PCIe 756, A100 312) and the best measured square-matmul rate in the same
dtype on this device, so a CPU run still gets a meaningful MFU. Precision: bf16 autocast on CUDA
(``--dtype``; ``auto`` follows headstart's policy). ``--compile on,off`` runs each size with and
without ``torch.compile`` of every block (as ``headstart train --compile`` does).

    python bench/gpu_step.py                                  # CUDA: 50m and 300m, compiled and not
    python bench/gpu_step.py --sizes tiny --compile off       # anywhere, in seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from headstart.models import get_adapter
from headstart.precision import compute_dtype
from headstart.training.kd_loss import KDConfig
from headstart.training.step import DistillModule, StepContext, train_step

# dense bf16 peaks from the vendors' datasheets, FLOP/s; matched against the CUDA device name in order
SPEC_PEAKS = [("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100", 989.4e12), ("A100", 312.0e12)]

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, head_dim=64, tie_word_embeddings=True)
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"teacher": dict(vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=32),
             "student": dict(vocab_size=2048, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=32),
             "batch_size": 2, "seq_len": 32},
    "50m": {"teacher": "builtin:smollm2-135m",
            "student": dict(vocab_size=49152, hidden_size=384, intermediate_size=1024, num_hidden_layers=20,
                            num_attention_heads=6, num_key_value_heads=2, head_dim=64, tie_word_embeddings=True),
            "batch_size": 8, "seq_len": 2048},
    "300m": {"teacher": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
             "student": dict(vocab_size=128256, hidden_size=1024, intermediate_size=4096, num_hidden_layers=12,
                             num_attention_heads=16, num_key_value_heads=4, head_dim=64, tie_word_embeddings=True),
             "batch_size": 8, "seq_len": 2048},
}


def _llama(shape: dict[str, Any], seq_len: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_config(LlamaConfig(**shape, max_position_embeddings=max(seq_len, 2048)),
                                                dtype=torch.float32)


def build_pair(size: str, seq_len: int) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """Teacher, student (fp32, on the CPU) and a label saying where the teacher came from."""
    spec = SIZES[size]
    teacher_spec = spec["teacher"]
    if isinstance(teacher_spec, str):
        from headstart.errors import TeacherError
        from headstart.teacher import load_teacher

        try:
            teacher, label = load_teacher(teacher_spec).model, teacher_spec
        except TeacherError:  # not cached and no network: the same shapes with random weights
            teacher, label = _llama(SMOLLM2, seq_len, 0), f"random weights in the shape of {teacher_spec}"
    else:
        teacher, label = _llama(teacher_spec, seq_len, 0), "random Llama"
    return teacher, _llama(spec["student"], seq_len, 1), label


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """The best rate of ``n × n`` matrix products in ``dtype`` on ``device``, FLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * n**3 / best


def spec_peak(device: torch.device) -> tuple[str, float | None]:
    """The device's name and its datasheet dense bf16 peak (``None`` when unknown, e.g. CPUs)."""
    if device.type != "cuda":
        return platform.processor() or platform.machine(), None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in SPEC_PEAKS if key in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flops_per_token(model: torch.nn.Module, seq_len: int) -> int:
    return get_adapter(model.config).counts(None, seq_len).flops_per_token


def run_case(size: str, compiled: bool, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time ``args.steps`` KD train steps of ``size`` after ``args.warmup`` untimed ones."""
    spec = SIZES[size]
    batch, seq = args.batch_size or spec["batch_size"], args.seq_len or spec["seq_len"]
    teacher, student, label = build_pair(size, seq)
    half = compute_dtype(args.dtype, device)
    teacher = teacher.to(device=device, dtype=half or torch.float32).eval().requires_grad_(False)
    student = student.to(device).train()
    vocab = student.config.vocab_size
    if compiled:
        for block in get_adapter(student.config).decoder_layers(student):
            block.compile()
    kd = KDConfig("forward", alpha=0.5, temperature=1.0)
    model = DistillModule(student, kd, vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=half or torch.bfloat16, enabled=half is not None)
    ctx = StepContext(model, optimizer, kd, 1.0, autocast, teacher=teacher)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (batch, seq + 1), generator=gen).to(device) for _ in range(4)]
    for i in range(args.warmup):
        train_step(ctx, [batches[i % 4]], i + 1)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        stats = train_step(ctx, [batches[i % 4]], args.warmup + i + 1)
    _sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    student_fpt, teacher_fpt = _flops_per_token(student, seq), _flops_per_token(teacher, seq)
    flops = (3 * student_fpt + teacher_fpt) * batch * seq
    return {"size": size, "compile": compiled, "teacher": label, "batch_size": batch, "seq_len": seq,
            "student_params": sum(p.numel() for p in student.parameters()),
            "teacher_params": sum(p.numel() for p in teacher.parameters()),
            "student_flops_per_token": student_fpt, "teacher_flops_per_token": teacher_fpt,
            "flops_per_step": flops, "step_s": step_s, "tokens_per_s": batch * seq / step_s,
            "achieved_flops": flops / step_s, "final_loss": stats["loss"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write its JSON."""
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50m,300m" if cuda else "tiny", help=f"comma-separated, of {sorted(SIZES)}")
    p.add_argument("--compile", default="off,on" if cuda else "off", help="off, on, or both: off,on")
    p.add_argument("--dtype", default="bfloat16" if cuda else "auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="override the size's batch")
    p.add_argument("--seq-len", type=int, default=None, help="override the size's sequence length")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_step.json"))
    args = p.parse_args(argv)
    device = torch.device("cuda" if cuda else "cpu")
    half = compute_dtype(args.dtype, device)
    name, datasheet = spec_peak(device)
    measured = matmul_peak(device, half or torch.float32, 8192 if cuda else 512)
    runs = []
    for size in args.sizes.split(","):
        for mode in args.compile.split(","):
            run = run_case(size, mode == "on", args, device)
            run["mfu_measured_peak"] = run["achieved_flops"] / measured
            run["mfu_datasheet_peak"] = run["achieved_flops"] / datasheet if datasheet else None
            runs.append(run)
            print(f"{size:>5} compile={mode:<3} {run['tokens_per_s']:>10.0f} tok/s  step {run['step_s'] * 1e3:8.1f} ms"
                  f"  MFU {run['mfu_measured_peak']:.1%} of measured matmul peak"
                  + (f", {run['mfu_datasheet_peak']:.1%} of datasheet" if datasheet else ""))
    result = {"device": name, "device_type": device.type, "torch": torch.__version__,
              "dtype": str(half or torch.float32).removeprefix("torch."), "datasheet_peak_flops": datasheet,
              "measured_matmul_peak_flops": measured, "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
