"""``headstart inspect`` and ``headstart extract`` end to end, including bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tiny import TEXT
from transformers import AutoModelForCausalLM

from headstart.cli import main
from headstart.extraction import load_spec_of
from headstart.selection import from_sizes


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def test_inspect_json(tiny_teacher_dirs, capsys):
    assert main(["inspect", "--teacher", str(tiny_teacher_dirs["gpt_neox"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_type"] == "gpt_neox"
    assert info["params"] == info["params_loaded"]
    assert "hidden = heads x 16" in info["spec_ranges"]["constraint"]


def test_extract_from_sizes_in_both_modes(tiny_teacher_dirs, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT * 20)
    for mode in ("importance", "first-k"):
        out = tmp_path / mode
        code = main(["extract", "--teacher", str(tiny_teacher_dirs["smollm2"]), "--out", str(out),
                     "--layers", "3", "--hidden", "32", "--mlp", "48", "--heads-per-group", "1",
                     "--order", mode, "--calib", str(calib), "--calib-samples", "4", "--calib-seq-len", "32"])
        assert code == 0
        spec = load_spec_of(out)
        assert spec.sizes()["hidden_size"] == 32 and spec.num_hidden_layers == 3
        model = AutoModelForCausalLM.from_pretrained(out)
        assert model.config.tie_word_embeddings and model.config.hidden_size == 32
    assert load_spec_of(tmp_path / "first-k").hidden == tuple(range(32))
    assert load_spec_of(tmp_path / "importance").hidden != tuple(range(32))


def test_extract_from_spec_file_and_config(tiny_teacher_dirs, tmp_path):
    from headstart.teacher import load_teacher

    dims = load_teacher(tiny_teacher_dirs["qwen3"]).dims
    spec = from_sizes(dims, layers=[0, 3], hidden=32, kv_groups=1, mlp=40)
    spec.save(tmp_path / "spec.yaml")
    cfg = tmp_path / "extract.yaml"
    cfg.write_text(f"teacher: {tiny_teacher_dirs['qwen3']}\nspec: {tmp_path / 'spec.yaml'}\n")
    assert main(["extract", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0
    assert load_spec_of(tmp_path / "out") == spec


@pytest.mark.parametrize(
    "args, message",
    [
        (["--spec", "BAD"], "out of range"),
        (["--hidden", "30", "--heads-per-group", "2"], "rejects"),  # LlamaConfig: 30 % 4 != 0
        (["--mlp", "1000"], "larger than the teacher's 96"),
        (["--layers", "0,0"], "repeats index 0"),
    ],
)
def test_extract_bad_specs(tiny_teacher_dirs, tmp_path, capsys, args, message):
    if args[:2] == ["--spec", "BAD"]:
        bad = tmp_path / "bad.yaml"
        bad.write_text("layers: [0, 9]\nhidden: [0, 1]\nkv_groups: [[0], [0]]\nheads: [[[0]], [[0]]]\n"
                       "mlp: [[0], [0]]\n")
        args = ["--spec", str(bad)]
    out = tmp_path / "out"
    code = main(["extract", "--teacher", str(tiny_teacher_dirs["llama"]), "--out", str(out), "--order", "first-k",
                 *args])
    assert code == 2
    line = _err_line(capsys)
    assert line.startswith("headstart extract: error:") and message in line
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_extract_refuses_existing_output(tiny_teacher_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["extract", "--teacher", str(tiny_teacher_dirs["llama"]), "--out", str(out), "--order", "first-k"])
    assert code == 2 and "already exists" in _err_line(capsys)
    assert (out / "keep.txt").read_text() == "mine"


def test_bad_teachers_give_one_line_and_exit_code(tmp_path):
    cases = [
        (["--teacher", str(tmp_path / "missing")], "does not exist"),
        (["--teacher", "SomeOrg/some-model"], "offline"),
    ]
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-m", "headstart", "inspect", *args], capture_output=True,
                              text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr


def test_config_file_unknown_key_suggests(tiny_teacher_dirs, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("teachr: x\n")
    assert main(["inspect", "--config", str(cfg), "--teacher", "x"]) == 2
    line = _err_line(capsys)
    assert "unknown key 'teachr'" in line and "did you mean 'teacher'" in line
