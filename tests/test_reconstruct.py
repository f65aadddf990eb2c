"""Weight reconstruction at extraction, on tiny models of every family: it never raises the
calibration error of a layer's output over plain slicing, it lowers it for a reduced spec, and a
spec that keeps everything comes out unchanged."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_pipeline import _recipe
from tiny import FAMILIES, TEXT, VOCAB, tiny_model, tiny_tokenizer

from headstart.cli import main
from headstart.config import load_recipe
from headstart.errors import ConfigError
from headstart.extraction import build_student
from headstart.pipeline import Pipeline
from headstart.reconstruct import collect_cross, collect_grams, reconstruct
from headstart.selection import from_sizes, full
from headstart.spec import SubnetSpec
from headstart.teacher import Teacher

CALIB = torch.randint(0, VOCAB, (8, 24), generator=torch.Generator().manual_seed(3))
IDS = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))


def _teacher(family: str) -> Teacher:
    return Teacher.from_model(tiny_model(family), tiny_tokenizer(), source=f"tiny-{family}")


def _reduced(family: str, teacher: Teacher) -> SubnetSpec:
    heads = dict(kv_groups=1, heads_per_group=2) if family == "mistral" else dict(kv_groups=2, heads_per_group=1)
    if family == "gpt_neox":
        heads = dict(kv_groups=3, heads_per_group=1)
    return teacher.adapter.validate(from_sizes(teacher.dims, layers=3, hidden=48, mlp=40, **heads))


def _layer_errors(teacher: Teacher, spec: SubnetSpec, student) -> list[float]:
    """Per kept layer and projection: squared error of the student's projection against the teacher's
    whole output (sliced to the kept channels), on the teacher's own inputs, computed directly."""
    adapter = teacher.adapter
    inputs: dict = {}

    def keep(key):
        def hook(_module, args):
            inputs[key] = args[0].reshape(-1, args[0].shape[-1])
        return hook

    hooks = []
    blocks = adapter.decoder_layers(teacher.model)
    for t in spec.layers:
        for part, get in (("attn", adapter.attn_output_proj), ("mlp", adapter.mlp_output_proj)):
            hooks.append(get(blocks[t]).register_forward_pre_hook(keep((t, part))))
    with torch.no_grad():
        teacher.model(input_ids=CALIB)
    for h in hooks:
        h.remove()
    errors = []
    rows = torch.as_tensor(spec.hidden)
    s_blocks = adapter.decoder_layers(student)
    for i, t in enumerate(spec.layers):
        for part, cols, get in zip(("attn", "mlp"), adapter.output_columns(spec, i),
                                   (adapter.attn_output_proj, adapter.mlp_output_proj)):
            x = inputs[(t, part)].double()
            y = x @ get(blocks[t]).weight.double()[rows].T
            pred = x[:, torch.as_tensor(cols)] @ get(s_blocks[i]).weight.double().T
            errors.append(float(((pred - y) ** 2).sum().detach()))
    return errors


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reconstruction_never_raises_layer_error(family):
    teacher = _teacher(family)
    spec = _reduced(family, teacher)
    plain = build_student(teacher, spec)
    refit = build_student(teacher, spec)
    stats = reconstruct(teacher, spec, refit, CALIB, ridge=1e-3)
    before, after = _layer_errors(teacher, spec, plain), _layer_errors(teacher, spec, refit)
    for b, a in zip(before, after):
        assert a <= b * (1 + 1e-9) + 1e-9
    assert sum(after) < 0.9 * sum(before)  # the MLP drops neurons: the refit must help, not just tie
    assert stats["error_after"] < stats["error_before"]
    assert stats["error_before"] == pytest.approx(sum(before) / CALIB.numel(), rel=1e-4)


@pytest.mark.parametrize("family", ["smollm2", "gpt_neox"])
def test_full_spec_is_unchanged(family):
    teacher = _teacher(family)
    spec = full(teacher.dims)
    student = build_student(teacher, spec)
    reconstruct(teacher, spec, student, CALIB, ridge=1e-3)
    with torch.no_grad():
        diff = (student(input_ids=IDS).logits - teacher.model(input_ids=IDS).logits).abs().max()
    assert diff < 1e-4


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_student_inputs_lower_the_error_they_see_and_keep_a_full_spec(family):
    """With the student's own inputs each pass lowers the error on the inputs it sees; a full-size spec
    (the student is the teacher) comes out unchanged, and its moments are the teacher's Gram."""
    teacher = _teacher(family)
    spec = _reduced(family, teacher)
    student = build_student(teacher, spec)
    one = reconstruct(teacher, spec, student, CALIB, inputs="student")
    assert one["error_after"] < one["error_before"] and one["inputs"] == "student"
    again = reconstruct(teacher, spec, student, CALIB, inputs="student")  # a second pass on the refit inputs
    assert again["error_after"] <= again["error_before"] * (1 + 1e-9)
    whole = full(teacher.dims)
    same = build_student(teacher, whole)
    moments = collect_cross(teacher.model, same, teacher.adapter, list(whole.layers), CALIB)
    assert torch.allclose(moments[(1, "mlp")].zz, moments[(1, "mlp")].xx)
    assert torch.allclose(moments[(1, "mlp")].zx, moments[(1, "mlp")].xx)
    reconstruct(teacher, whole, same, CALIB, inputs="student", passes=2)
    with torch.no_grad():
        diff = (same(input_ids=IDS).logits - teacher.model(input_ids=IDS).logits).abs().max()
    assert diff < 1e-4
    with pytest.raises(ValueError, match="passes"):
        reconstruct(teacher, spec, student, CALIB, passes=2)


def test_grams_are_sums_over_tokens():
    teacher = _teacher("llama")
    whole = collect_grams(teacher.model, teacher.adapter, [1], CALIB, batch_size=8)
    split = collect_grams(teacher.model, teacher.adapter, [1], CALIB, batch_size=3)
    assert set(whole) == {(1, "attn"), (1, "mlp")}
    assert whole[(1, "mlp")].dtype == torch.float64
    assert torch.allclose(whole[(1, "mlp")], split[(1, "mlp")], rtol=1e-5, atol=1e-6)


def test_recipe_reconstruct_section_trains_from_reconstructed_students(tiny_teacher_dirs, tmp_path):
    data = _recipe(tiny_teacher_dirs["llama"], tmp_path / "out")
    data["reconstruct"] = {"enabled": True}
    data["compare"] = {"runs": ["random-ce", "searched-ce"]}
    data["train"]["tokens"] = 512
    pipe = Pipeline(load_recipe(data), say=lambda _: None)
    pipe.run(only="train")
    students = tmp_path / "out" / "students" / "bin0-110k"
    config = yaml.safe_load((tmp_path / "out" / "runs" / "bin0-110k" / "searched-ce" / "config.yaml").read_text())
    assert config["paths"]["student"] == str(students / "searched")
    meta = yaml.safe_load((students / "searched" / "headstart_spec.yaml").read_text())
    assert meta["reconstruction"]["error_after"] <= meta["reconstruction"]["error_before"]
    random_cfg = yaml.safe_load((tmp_path / "out" / "runs" / "bin0-110k" / "random-ce" / "config.yaml").read_text())
    assert random_cfg["paths"]["student"] == f"random:{students / 'searched.yaml'}"
    with pytest.raises(ConfigError, match="unknown key 'reconstruct.spec'"):
        load_recipe({**data, "reconstruct": {"spec": "x.yaml"}})
    with pytest.raises(ConfigError, match="'extract' section is now 'reconstruct'"):
        load_recipe({**data, "extract": {"reconstruct": True}})


def test_extract_command_reconstructs(tiny_teacher_dirs, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT * 20)
    common = ["--teacher", str(tiny_teacher_dirs["llama"]), "--layers", "3", "--mlp", "48", "--calib", str(calib),
              "--calib-samples", "4", "--calib-seq-len", "32"]
    assert main(["extract", "--out", str(tmp_path / "plain"), *common]) == 0
    assert main(["extract", "--out", str(tmp_path / "rec"), "--reconstruct.enabled", *common]) == 0
    plain, rec = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "rec" / "model.safetensors")
    changed = [k for k in plain if not torch.equal(plain[k], rec[k])]
    assert changed and all(k.endswith(("o_proj.weight", "down_proj.weight")) for k in changed)
    meta = yaml.safe_load((tmp_path / "rec" / "headstart_spec.yaml").read_text())
    assert meta["reconstruction"]["error_after"] < meta["reconstruction"]["error_before"]
    assert main(["extract", "--out", str(tmp_path / "own"), "--reconstruct.enabled", "--reconstruct.inputs",
                 "student", *common]) == 0
    own = yaml.safe_load((tmp_path / "own" / "headstart_spec.yaml").read_text())["reconstruction"]
    assert (own["inputs"], own["passes"]) == ("student", 2) and own["error_after"] < own["error_before"]
    assert own["flops"] > meta["reconstruction"]["flops"]  # two passes, each with a student forward
