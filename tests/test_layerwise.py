"""Layer-wise sub-networks: exports that load without headstart, compute the teacher's function with
the dropped heads and neurons zeroed, count exactly, and train on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny import VOCAB, layerwise_spec, prepared_corpus, save_tiny_teacher, tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

from headstart.cli import main
from headstart.errors import SpecError
from headstart.extraction import export, load_spec_of
from headstart.models import get_adapter
from headstart.selection import full
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher

LAYERWISE = ("llama", "smollm2", "mistral", "qwen2", "qwen3")
IDS = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))


def zeroed_teacher_logits(teacher: Teacher, spec: SubnetSpec) -> torch.Tensor:
    """The teacher with every dropped head's output columns and dropped neuron's down-projection
    columns zeroed (a dropped layer loses all of them, which makes it the identity)."""
    model = tiny_model(teacher.source.removeprefix("tiny-"))
    adapter = teacher.adapter
    with torch.no_grad():
        for t, layer in enumerate(adapter.decoder_layers(model)):
            keep_attn, keep_mlp = adapter.output_columns(spec, spec.layers.index(t)) if t in spec.layers else ([], [])
            projections = (adapter.attn_output_proj(layer), keep_attn), (adapter.mlp_output_proj(layer), keep_mlp)
            for proj, keep in projections:
                mask = torch.zeros(proj.weight.shape[1], dtype=torch.bool)
                mask[keep] = True
                proj.weight[:, ~mask] = 0
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("layerwise")
    out = {}
    for family in LAYERWISE:
        teacher = Teacher.from_model(tiny_model(family), tiny_tokenizer(), source=f"tiny-{family}")
        spec = teacher.adapter.validate(layerwise_spec(teacher.dims))
        out[family] = (teacher, spec, export(teacher, spec, root / family))
    return out


_NO_HEADSTART = """
    import json, sys, torch
    from transformers import AutoModelForCausalLM
    try:
        import headstart
        sys.exit("headstart must not be importable here")
    except ImportError:
        pass
    ids = torch.load(sys.argv[1])
    result = {}
    for path in sys.argv[2:]:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
        with torch.no_grad():
            result[path] = {"logits": model(input_ids=ids).logits.tolist(),
                            "params": sum(p.numel() for p in model.parameters())}
    print(json.dumps(result))
"""


def test_export_loads_without_headstart_and_equals_the_zeroed_teacher(exports, tmp_path):
    fake = tmp_path / "fake" / "headstart"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('headstart is not installed here')\n")
    torch.save(IDS, tmp_path / "ids.pt")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake"), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    dirs = [str(out) for _, _, out in exports.values()]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_NO_HEADSTART), str(tmp_path / "ids.pt"), *dirs],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for family, (teacher, spec, out) in exports.items():
        got = result[str(out)]
        expected = zeroed_teacher_logits(teacher, spec)
        assert (torch.tensor(got["logits"]) - expected).abs().max() < 1e-5, family
        assert got["params"] == teacher.adapter.counts(spec.shape).params, family


def test_export_ships_per_layer_config_and_loads_with_headstart_alone(exports):
    teacher, spec, out = exports["qwen3"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "headstart_layerwise" and config["family_model_type"] == "qwen3"
    assert [s["intermediate_size"] for s in config["layer_sizes"]] == [len(m) for m in spec.mlp]
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModelForCausalLM"}
    assert (out / "modeling_layerwise.py").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)  # registered by headstart: no trust_remote_code
    assert type(model).__name__ == "HeadstartLayerwiseForCausalLM" and load_spec_of(out) == spec
    adapter = get_adapter(model.config)
    assert adapter.counts().params == sum(p.numel() for p in model.parameters())
    assert adapter.counts(seq_len=64).flops_per_token == teacher.adapter.counts(spec.shape, 64).flops_per_token
    with pytest.raises(SpecError, match="not supported yet"):
        adapter.validate(full(adapter.dims))
    from headstart.describe import describe_teacher
    from headstart.teacher import load_teacher

    info = describe_teacher(load_teacher(out))
    assert info["params"] == info["params_loaded"] and "1x1/20" in info["dims"]["per layer (kv x heads/mlp)"]


def test_gpt_neox_refuses_layer_wise():
    teacher = Teacher.from_model(tiny_model("gpt_neox"), tiny_tokenizer(), source="tiny-gpt_neox")
    with pytest.raises(SpecError, match="GPTNeoXConfig students keep the same sizes in every layer"):
        teacher.adapter.validate(layerwise_spec(teacher.dims))


def test_round_trip_spec_export_train_export_with_cached_logits_and_resume(tmp_path, monkeypatch, capsys):
    """spec -> export -> train (cached teacher logits) -> export; a run stopped after its checkpoint and
    resumed ends bitwise where the uninterrupted one does."""
    from safetensors.torch import load_file

    from headstart.training import loop

    teacher_dir = save_tiny_teacher("qwen3", tmp_path / "teacher")
    data = prepared_corpus(tmp_path, docs=8, repeat=4)
    spec_file = layerwise_spec(get_adapter(tiny_model("qwen3").config).dims).save(tmp_path / "spec.yaml")
    student, cache = tmp_path / "student", tmp_path / "cache"
    assert main(["extract", "--teacher", str(teacher_dir), "--spec", str(spec_file), "--out", str(student)]) == 0
    assert main(["cache-logits", "--teacher", str(teacher_dir), "--data", str(data), "--out", str(cache),
                 "--seq-len", "16", "--k", "8", "--dtype", "float32", "--no-progress"]) == 0
    train = ["train", "--teacher-cache", str(cache), "--student", str(student), "--data", str(data),
             "--tokens", str(4 * 2 * 16), "--seq-len", "16", "--batch-size", "2", "--checkpoint.every",
             "2", "--runtime.dtype", "float32", "--no-progress", "--validation.windows", "2"]
    assert main([*train, "--out", str(tmp_path / "run")]) == 0
    trained = tmp_path / "run" / "student"
    assert (trained / "modeling_layerwise.py").is_file()
    before = AutoModelForCausalLM.from_pretrained(student).state_dict()
    after = AutoModelForCausalLM.from_pretrained(trained).state_dict()
    assert before.keys() == after.keys() and all(before[k].shape == after[k].shape for k in before)
    assert not torch.equal(before["model.layers.1.mlp.down_proj.weight"], after["model.layers.1.mlp.down_proj.weight"])
    summary = json.loads((trained / "training_summary.json").read_text())
    assert summary["steps"] == 4 and summary["teacher_tokens"] == 0 and summary["final"]["kd"] > 0

    original = loop.Trainer._should_stop
    monkeypatch.setattr(loop.Trainer, "_should_stop",
                        lambda self, **kw: self.counters.step == 2 or original(self, **kw))
    assert main([*train, "--out", str(tmp_path / "cut")]) != 0
    monkeypatch.setattr(loop.Trainer, "_should_stop", original)
    assert main([*train, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    straight, resumed = (load_file(d / "student" / "model.safetensors") for d in (tmp_path / "run", tmp_path / "cut"))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
