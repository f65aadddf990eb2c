"""What each command prints when it is done: a few lines a person reads (the files hold the rest)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEMO_RECIPE = "demo.yaml"


def demo_text() -> str:
    """The embedded demo recipe (shipped inside the package), as written."""
    return resources.files("headstart.recipes").joinpath(DEMO_RECIPE).read_text()


def demo_recipe() -> dict[str, Any]:
    """The embedded demo recipe as plain data."""
    return yaml.safe_load(demo_text())


def inspect(info: dict[str, Any], cfg: Any) -> str:
    """A table (or JSON with ``--json``)."""
    if cfg.json:
        return json.dumps(info, indent=1)
    lines = [f"{info['source']}: {info['class']} ({info['model_type']}), fingerprint {info['fingerprint']}"]
    lines += [f"  {k:<28} {v}" for k, v in info["dims"].items()]
    lines += [
        f"  {'tied embeddings':<28} {info['tied_embeddings']}",
        f"  {'tokenizer vocabulary':<28} {info['tokenizer_vocab']}",
        f"  {'parameters':<28} {info['params']:,} (loaded: {info['params_loaded']:,})",
        f"  {'  embedding':<28} {info['embedding_params']:,}",
        f"  {'  non-embedding':<28} {info['non_embedding_params']:,}",
        f"  {'forward FLOPs/token':<28} {info['forward_flops_per_token']:,} (context {info['flops_context']})",
        "spec ranges:",
    ]
    lines += [f"  {k:<28} {v}" for k, v in info["spec_ranges"].items()]
    return "\n".join(lines)


def prepare(path: Path, cfg: Any) -> str:
    """What the directory holds, one line per split."""
    from headstart.data import read_manifest

    m = read_manifest(path)
    lines = [f"{path}: tokenizer {m['tokenizer']['fingerprint']}, {m['dtype']}"]
    for split, rec in m["splits"].items():
        lines.append(f"  {split:6s} {rec['tokens']:>12,} tokens  {rec['documents']:>8,} documents  "
                     f"{len(rec['shards'])} shards")
    if m.get("replaced"):
        lines.append(f"  {m['replaced']} undecodable byte sequences were replaced with U+FFFD")
    return "\n".join(lines)


def extract(out: Path, cfg: Any) -> str:
    """Where the student is, its sizes and its share of the teacher."""
    from headstart.config.fields import read_yaml
    from headstart.extraction import SPEC_FILE
    from headstart.spec import SubnetSpec

    meta = read_yaml(out / SPEC_FILE, "spec")
    spec = SubnetSpec.from_dict(meta["spec"])
    share = f" ({meta['params'] / meta['teacher_params']:.1%} of the teacher)" if meta.get("teacher_params") else ""
    return f"{out}: {spec.describe()}, {meta['params']:,} parameters{share}{_remote_code_note(out)}"


def _remote_code_note(student: Path) -> str:
    config = student / "config.json"
    if config.is_file() and "auto_map" in json.loads(config.read_text()):
        return ("\n  a layer-wise student: load it with AutoModelForCausalLM.from_pretrained(path, "
                "trust_remote_code=True) where headstart is not installed (the tokenizer needs no remote code)")
    return ""


def search(outcome: Any, cfg: Any) -> str:
    """A table per bin and run (from ``summary.json``), evaluations per minute, and the output files."""
    out = Path(outcome.out)
    data = json.loads((out / "summary.json").read_text())
    head = ("bin", "run", "evals", "best loss", "params", "layers", "hidden", "kv x heads", "mlp", "depth")
    rows = [head]
    for run in data["runs"]:
        for b in run["bins"]:
            s = b["best_sizes"]
            if s is None:
                rows.append((b["bin"]["label"], run["run"], str(b["evaluations"]), *["-"] * 7))
                continue
            most = "<=" if "layer_sizes" in s else ""  # layer-wise: the largest layer's sizes
            rows.append((b["bin"]["label"], run["run"], str(b["evaluations"]), f"{b['best_loss']:.3f}",
                         f"{b['best_params'] / 1e6:.1f}M", str(s["num_hidden_layers"]), str(s["hidden_size"]),
                         f"{most}{s['num_key_value_heads']}x{s['num_attention_heads'] // s['num_key_value_heads']}",
                         f"{most}{s['intermediate_size']}", str(b["best_depth"])))
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("evaluations per minute: " + ", ".join(f"{r['run']} {r['evaluations_per_minute']:.1f}"
                                                        for r in data["runs"]))
    lines += [f"{p.name}: {p}" for p in sorted(out.glob("best-*.yaml"))]
    lines += [f"{name}: {out / name}" for name in ("summary.json", "search.png", "journal.jsonl")
              if (out / name).exists()]
    return "\n".join(lines)


def train(result: Any, cfg: Any) -> str:
    """One JSON line: where the student is, steps, tokens and the final losses."""
    data = result.summary
    final = {k: round(v, 4) for k, v in (data.get("final") or {}).items()}
    line = json.dumps({"student": str(result.student_dir), "steps": data["steps"], "tokens": data["tokens"], **final})
    return line + _remote_code_note(result.student_dir)


def export(out: Path, cfg: Any) -> str:
    """Where the checkpoint's Hugging Face directory is."""
    return json.dumps({"student": str(out)})


def cache_logits(out: Path, cfg: Any) -> str:
    """One JSON line: where the cache is, its windows, k and bytes per token."""
    info = json.loads((Path(out) / "cache.json").read_text())
    return json.dumps({"cache": str(out), "windows": info["windows"], "k": info["k"],
                       "bytes_per_token": round(info["bytes_per_token"], 1)})


def evaluate(r: dict[str, Any], cfg: Any) -> str:
    """Size, loss and perplexity, task metrics, samples."""
    lines = [f"{r['checkpoint']}: {r['params']:,} parameters, {r['flops_per_token']:,} forward FLOPs/token"]
    if "loss" in r:
        lines.append(f"  loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}  ({r['tokens']:,} tokens)")
    for task, metrics in r.get("tasks", {}).items():
        lines.append(f"  {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    lines += ["  > " + s.replace("\n", " ")[:200] for s in r.get("samples", [])]
    return "\n".join(lines)


def run(result: Path, cfg: Any) -> str:
    """Where the results are, and (after the report) each budget's comparison in a few lines."""
    data_path = result / "summary.json"
    if result.name != "report" or not data_path.is_file():
        return f"done: {result}"
    data = json.loads(data_path.read_text())
    lines = [f"report: {result / 'report.md'}"]
    for budget in data["budgets"]:
        lines.append(f"{budget['label']}: target = {budget['baseline']}'s final val loss {budget['target_loss']:.3f}")
        for row in budget["rows"]:
            ratio = ("reference" if row["run"] == "teacher" else f"{row['token_ratio']:.2f}x fewer tokens"
                     if row.get("token_ratio") else "at the target before training" if row.get("reached_at_start")
                     else "target not reached")
            lines.append(f"  {row['label']:<28} val loss {row['final_loss']:.3f}  ppl {row['final_ppl']:8.1f}  {ratio}")
    return "\n".join(lines)


def compare(result: Path, cfg: Any) -> str:
    """Every budget's comparison table, as in report.md."""
    from headstart.report import markdown_table

    data_path = result / "summary.json"
    if not data_path.is_file():
        return f"done: {result}"
    data = json.loads(data_path.read_text())
    parts = [f"### {b['label']}\n\n{markdown_table(b['rows'], b.get('windows', 'val'))}" for b in data["budgets"]]
    return "\n".join(parts) + f"\nreport: {result / 'report.md'}"
