"""`headstart export`: any checkpoint of a training run becomes a loadable Hugging Face directory;
`checkpoint.retain` decides what stays once the run has exported its student."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import prepared_corpus, save_tiny_teacher
from transformers import AutoModelForCausalLM

from headstart.cli import main
from headstart.training.checkpoint import list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {"teacher": str(save_tiny_teacher("llama", root / "teacher")), "data": str(prepared_corpus(root))}


def _train(setup, out, *extra: str) -> None:
    assert main(["train", "--student", f"random:{setup['teacher']}", "--data", setup["data"], "--out", str(out),
                 "--tokens", str(4 * 2 * 16), "--seq-len", "16", "--batch-size", "2", "--kd.kind", "none",
                 "--checkpoint.every", "2", "--checkpoint.keep", "3", "--validation.windows", "2",
                 "--runtime.dtype", "float32", "--no-progress", *extra]) == 0


def test_a_checkpoint_exports_to_a_loadable_directory(setup, tmp_path, capsys):
    run = tmp_path / "run"
    _train(setup, run)
    assert [c.name for c in list_checkpoints(run)] == ["step-00000002", "step-00000004"]
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "s2"), "--step", "2", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[0])["student"] == str(tmp_path / "s2")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "s2").state_dict()
    saved = load_checkpoint(run / "checkpoints" / "step-00000002").model
    for key, value in exported.items():
        assert torch.equal(value, saved.get(f"student.{key}", saved.get(key))), key
    assert json.loads((tmp_path / "s2" / "training_summary.json").read_text())["step"] == 2
    # the newest checkpoint is the step the run ended at: the same weights as the run's own student
    assert main(["export", str(run), "--out", str(tmp_path / "last"), "--no-progress"]) == 0
    final = AutoModelForCausalLM.from_pretrained(run / "student").state_dict()
    for key, value in AutoModelForCausalLM.from_pretrained(tmp_path / "last").state_dict().items():
        assert torch.equal(value, final[key]), key


def test_export_refuses_a_missing_step_an_existing_out_and_a_non_run(setup, tmp_path, capsys):
    run = tmp_path / "run"
    _train(setup, run)
    capsys.readouterr()
    for argv, words in ((["--out", str(tmp_path / "x"), "--step", "3"], "steps held: 2, 4"),
                        (["--out", str(run / "student")], "exists"),):
        assert main(["export", str(run), *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert main(["export", setup["data"], "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "not a headstart train run" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("retain, left", [("last", ["step-00000004"]), ("none", [])])
def test_retain_keeps_the_newest_or_nothing(setup, tmp_path, capsys, retain, left):
    run = tmp_path / "run"
    _train(setup, run, "--checkpoint.retain", retain)
    assert [c.name for c in list_checkpoints(run)] == left
    assert (run / "student" / "config.json").is_file()
    if not left:
        capsys.readouterr()
        assert main(["export", str(run), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
        assert "steps held: none" in capsys.readouterr().err
