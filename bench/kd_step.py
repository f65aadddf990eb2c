"""One knowledge-distillation training step: headstart's chunked loss vs the naive full-logit loss.

Same student, teacher, batch and optimizer; vocabulary 49152 (the real teacher's) and sequence
length 512. Each variant runs in a fresh subprocess (so that peak RSS, read from ``ru_maxrss``, is
its own), under the same allocator settings; one warm-up step, then the timed steps. Both run at
each precision: fp32, and bf16 autocast where the machine has fast bf16 (what ``--autocast auto``
picks for training there). Also builds a top-k cache at k=64 and measures its bytes per token.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 \
        .venv/bin/python bench/kd_step.py            # writes bench/results/kd_step.json

Reference ("naive"): ``student(x).logits`` and ``teacher(x).logits`` in full, then
``alpha * cross_entropy + (1 - alpha) * T^2 * F.kl_div(log_softmax(s / T), log_softmax(t / T))``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig

VOCAB = 49152
MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}


def models(seed: int = 0):
    """A small student and a larger teacher, both random Llamas at vocabulary 49152."""
    torch.manual_seed(seed)
    student = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, max_position_embeddings=1024, tie_word_embeddings=False))
    teacher = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=VOCAB, hidden_size=512, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=8,
        num_key_value_heads=4, head_dim=64, max_position_embeddings=1024, tie_word_embeddings=False))
    return student.train(), teacher.eval().requires_grad_(False)


def naive_step(student, teacher, batch, alpha: float, t: float) -> float:
    """The reference: full logits of both models, F.kl_div on log-softmaxes."""
    x, y = batch[:, :-1], batch[:, 1:]
    with torch.no_grad():
        t_logits = teacher(input_ids=x).logits
    s_logits = student(input_ids=x).logits
    ce = F.cross_entropy(s_logits.flatten(0, 1), y.flatten())
    kl = F.kl_div(F.log_softmax(s_logits.flatten(0, 1) / t, -1), F.log_softmax(t_logits.flatten(0, 1) / t, -1),
                  log_target=True, reduction="batchmean")
    loss = alpha * ce + (1 - alpha) * t * t * kl
    loss.backward()
    return float(loss)


def headstart_step(module, teacher, batch) -> float:
    """headstart: hidden states only, the chunked loss through the output heads."""
    x, y = batch[:, :-1], batch[:, 1:]
    with torch.no_grad():
        hidden = teacher.base_model(input_ids=x, use_cache=False).last_hidden_state.flatten(0, 1)
    from headstart.training.step import TeacherTargets

    parts = module(x, y, TeacherTargets(hidden=hidden, head=teacher.get_output_embeddings().weight))
    parts.loss.backward()
    return float(parts.loss)


def _setup(batch_size: int, seq_len: int, steps: int, alpha: float, t: float):
    from headstart.training.kd_loss import KDConfig
    from headstart.training.step import DistillModule

    student, teacher = models()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, VOCAB, (batch_size, seq_len + 1), generator=gen) for _ in range(steps)]
    module = DistillModule(student, KDConfig("forward", alpha=alpha, temperature=t), VOCAB)
    return student, teacher, opt, batches, module


def _autocast(precision: str) -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _step(variant: str, student, teacher, opt, module, batch, alpha: float, t: float,
          precision: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    with _autocast(precision):
        if variant == "naive":
            loss = naive_step(student, teacher, batch, alpha, t)
        else:
            loss = headstart_step(module, teacher, batch)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, loss


def memory_worker(variant: str, batch_size: int, seq_len: int, alpha: float, t: float, precision: str) -> dict:
    """Peak RSS of two steps of one variant, in a process of its own."""
    student, teacher, opt, batches, module = _setup(batch_size, seq_len, 2, alpha, t)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    losses = [_step(variant, student, teacher, opt, module, b, alpha, t, precision)[1] for b in batches]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "peak_rss_mib": peak / 1024, "models_rss_mib": base / 1024,
            "step_rss_mib": (peak - base) / 1024, "first_loss": losses[0]}


def speed(batch_size: int, seq_len: int, steps: int, alpha: float, t: float, precision: str) -> dict:
    """Both variants in one process, steps interleaved (a noisy machine hits both alike); best of N."""
    student, teacher, opt, batches, module = _setup(batch_size, seq_len, steps + 1, alpha, t)
    times: dict[str, list[float]] = {"naive": [], "headstart": []}
    for i, batch in enumerate(batches):
        for variant in (("naive", "headstart") if i % 2 == 0 else ("headstart", "naive")):
            dt, _ = _step(variant, student, teacher, opt, module, batch, alpha, t, precision)
            if i > 0:  # the first round warms up
                times[variant].append(dt)
    tokens = batch_size * seq_len
    out = {}
    for variant, ts in times.items():  # noise on a shared machine only adds time: best of N
        out[variant] = {"step_s_min": min(ts), "step_s_median": sorted(ts)[len(ts) // 2], "step_s_all": ts,
                        "tokens_per_s": tokens / min(ts)}
    return out


def loss_only_speed(batch_size: int, seq_len: int, rounds: int, alpha: float, t: float, precision: str) -> dict:
    """Just the part that differs: the loss and its backward from given hidden states, best of N."""
    from headstart.training.kd_loss import KDConfig, chunked_kd_loss

    student, teacher = models()
    gen = torch.Generator().manual_seed(3)
    n = batch_size * seq_len
    hidden = torch.randn(n, student.config.hidden_size, generator=gen).requires_grad_()
    t_hidden = torch.randn(n, teacher.config.hidden_size, generator=gen)
    w, tw = student.lm_head.weight, teacher.lm_head.weight
    y = torch.randint(0, VOCAB, (n,), generator=gen)
    cfg = KDConfig("forward", alpha=alpha, temperature=t)

    def naive() -> None:
        s_logits, t_logits = hidden @ w.t(), t_hidden @ tw.t()
        kl = F.kl_div(F.log_softmax(s_logits / t, -1), F.log_softmax(t_logits / t, -1), log_target=True,
                      reduction="batchmean")
        (alpha * F.cross_entropy(s_logits, y) + (1 - alpha) * t * t * kl).backward()

    def ours() -> None:
        chunked_kd_loss(hidden, w, y, cfg, teacher_hidden=t_hidden, teacher_head=tw).loss.backward()

    times: dict[str, list[float]] = {"naive": [], "headstart": []}
    pair = (("naive", naive), ("headstart", ours))
    for i in range(rounds + 1):
        for name, fn in pair if i % 2 == 0 else pair[::-1]:
            t0 = time.perf_counter()
            with _autocast(precision):
                fn()
            if i > 0:
                times[name].append(time.perf_counter() - t0)
            hidden.grad = w.grad = None
    return {name: {"s_min": min(ts), "s_all": ts} for name, ts in times.items()}


def cache_bytes_per_token(seq_len: int, k: int = 64, windows: int = 8) -> dict:
    """Build a real top-k cache from the teacher over random windows; bytes on disk per token."""
    from headstart.training.teacher_cache import build_cache, bytes_per_token

    _, teacher = models()
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, VOCAB, (2, seq_len + 1), generator=gen) for _ in range(windows // 2)]
    with tempfile.TemporaryDirectory() as tmp:
        path = build_cache(teacher, batches, Path(tmp) / "cache", k=k, vocab=VOCAB, seq_len=seq_len, meta={})
        size = sum(f.stat().st_size for f in path.glob("*.npy"))
    return {"k": k, "bytes_per_token_on_disk": size / (windows * seq_len),
            "bytes_per_token_records": bytes_per_token(k, VOCAB, seq_len)}


def precisions() -> list[str]:
    """fp32 always; bf16 autocast where the CPU has native bf16 (as ``--autocast auto`` decides)."""
    fast_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return ["fp32", "bf16"] if fast_bf16 else ["fp32"]


def compare(args: argparse.Namespace, precision: str) -> dict:
    """Memory (one subprocess per variant) and speed (one subprocess, interleaved) at one precision."""
    env = {**os.environ, **MALLOC}  # both variants under the same allocator settings
    results = {}
    for worker in ("naive", "headstart", "speed"):
        cmd = [sys.executable, __file__, "--worker", worker, "--precision", precision, "--batch-size",
               str(args.batch_size), "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--alpha",
               str(args.alpha), "--temperature", str(args.temperature), "--threads", str(args.threads)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results[worker] = json.loads(out.strip().splitlines()[-1])
        print(precision, worker, results[worker], flush=True)
    h, n, sp = results["headstart"], results["naive"], results["speed"]
    return {
        "memory": {"naive": n, "headstart": h}, "speed": sp,
        "tokens_per_s_ratio": sp["headstart"]["tokens_per_s"] / sp["naive"]["tokens_per_s"],
        "tokens_per_s_ratio_median": sp["naive"]["step_s_median"] / sp["headstart"]["step_s_median"],
        "loss_only_speed_ratio": sp["loss_only"]["naive"]["s_min"] / sp["loss_only"]["headstart"]["s_min"],
        "peak_rss_ratio": h["peak_rss_mib"] / n["peak_rss_mib"],
        "step_rss_ratio": h["step_rss_mib"] / n["step_rss_mib"],
        "first_loss_rel_diff": abs(h["first_loss"] - n["first_loss"]) / abs(n["first_loss"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant (after one warm-up)")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--precision", choices=("fp32", "bf16"), action="append",
                   help="precision(s) to compare (default: fp32, and bf16 where the CPU has it)")
    p.add_argument("--worker", choices=("naive", "headstart", "speed"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "kd_step.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (args.batch_size, args.seq_len)
    if args.worker == "speed":
        precision = args.precision[0]
        out = speed(*shape, args.steps, args.alpha, args.temperature, precision)
        out["loss_only"] = loss_only_speed(*shape, args.steps, args.alpha, args.temperature, precision)
        print(json.dumps(out))
        return
    if args.worker:
        print(json.dumps(memory_worker(args.worker, *shape, args.alpha, args.temperature, args.precision[0])))
        return
    report = {
        "setup": {"vocab": VOCAB, "seq_len": args.seq_len, "batch_size": args.batch_size, "alpha": args.alpha,
                  "temperature": args.temperature, "student": "llama h256 x4 layers (28M)",
                  "teacher": "llama h512 x6 layers (67M)", "malloc": MALLOC,
                  "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()},
        "precisions": {precision: compare(args, precision) for precision in args.precision or precisions()},
        "cache": cache_bytes_per_token(args.seq_len),
        "targets": {"tokens_per_s_ratio": ">= 1.0", "peak_rss_ratio": "<= 0.6", "cache_bytes_per_token": "<= 300"},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    summary = {precision: {k: v for k, v in r.items() if "ratio" in k or "diff" in k}
               for precision, r in report["precisions"].items()}
    print(json.dumps({"summary": summary, "cache": report["cache"]}, indent=1))


if __name__ == "__main__":
    main()
