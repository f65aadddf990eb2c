"""``headstart search`` end to end on a tiny teacher: outputs, baselines, resume, bad input."""

from __future__ import annotations

import json

import pytest
import yaml
from test_search_fitness import make_data
from tiny import save_tiny_teacher

from headstart.cli import main
from headstart.config.train import INHERITED, OptimConfig, ScheduleConfig
from headstart.searching.journal import read_journal
from headstart.spec import SubnetSpec
from headstart.teacher import load_teacher


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    return save_tiny_teacher("smollm2", root / "teacher"), make_data(root)


def _args(teacher, data, out, *extra):
    return ["search", "--teacher", str(teacher), "--data", str(data), "--out", str(out), "--fitness.windows", "4",
            "--seq-len", "32", "--fitness.calibration-windows", "4", "--evolution.population", "3", "--dtype",
            "float32", "--rungs.count", "0", *extra]


def test_search_writes_best_specs_summary_plot_and_resumes(setup, tmp_path, capsys):
    teacher_dir, data = setup
    out = tmp_path / "out"
    assert main(_args(teacher_dir, data, out, "--bins", "2", "--evolution.evaluations", "4",
                      "--evolution.baselines")) == 0
    printed = capsys.readouterr().out
    assert "evolution/importance" in printed and "random/first-k" in printed and "eval" in printed
    header, records, bad = read_journal(out / "journal.jsonl")
    assert not bad and header["seed"] == 0 and len(records) == 3 * 2 * 4
    assert {r["run"] for r in records} == {"evolution/importance", "random/importance", "random/first-k"}
    assert all(r["layers"] == list(range(len(r["layers"]))) for r in records if r["run"] == "random/first-k")
    summary = json.loads((out / "summary.json").read_text())
    assert [r["run"] for r in summary["runs"]] == ["evolution/importance", "random/importance", "random/first-k"]
    assert (out / "search.png").stat().st_size > 1000
    teacher = load_teacher(str(teacher_dir))
    best_files = sorted(out.glob("best-bin*.yaml"))
    assert len(best_files) == 2
    for i, path in enumerate(best_files):
        doc = yaml.safe_load(path.read_text())
        spec = teacher.adapter.validate(SubnetSpec.load(path))
        params = teacher.adapter.counts(spec.shape).params
        assert params == doc["params"] and doc["bin"]["lo"] <= params <= doc["bin"]["hi"]
        main_losses = [r["loss"] for r in records if r["run"] == "evolution/importance" and r["bin"] == i]
        assert doc["loss"] == pytest.approx(min(main_losses))
    assert not list(out.glob("*.safetensors"))  # no candidate's weights are ever written

    # the same command again is refused; --resume with more evaluations only adds the new ones
    assert main(_args(teacher_dir, data, out, "--bins", "2", "--evolution.evaluations", "4",
                      "--evolution.baselines")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_args(teacher_dir, data, out, "--bins", "2", "--evolution.evaluations", "5", "--evolution.baselines",
                      "--resume")) == 0
    _, records2, _ = read_journal(out / "journal.jsonl")
    assert len(records2) == 3 * 2 * 5 and records2[:24] == records
    # a different seed is another search: refused
    assert main(_args(teacher_dir, data, out, "--bins", "2", "--seed", "1", "--resume")) == 2
    assert "another seed" in capsys.readouterr().err
    # so is another generation size (it changes which candidates are drawn)
    assert main(_args(teacher_dir, data, out, "--bins", "2", "--evolution.generation-size", "1",
                      "--resume")) == 2
    assert "another search" in capsys.readouterr().err


def test_bad_input_gives_one_line_errors(setup, tmp_path, capsys):
    teacher_dir, data = setup
    assert main(_args(teacher_dir, data, tmp_path / "a", "--params", "5B")) == 2
    assert "unreachable: the space reaches" in capsys.readouterr().err
    space = tmp_path / "space.yaml"
    space.write_text("mlp: {max: 4096}\n")
    assert main(_args(teacher_dir, data, tmp_path / "b", "--bins", "2", "--space.file", str(space))) == 2
    assert "larger than the teacher's MLP size" in capsys.readouterr().err
    assert main(_args(teacher_dir, data, tmp_path / "c", "--bins", "2", "--fitness.windows", "500")) == 2
    assert "search" in capsys.readouterr().err
    assert main(_args(teacher_dir, data, tmp_path / "d")) == 2
    assert "--params" in capsys.readouterr().err


def _same(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in records]


def _rung_results(out):
    return [{k: v for k, v in r.items() if k != "student"} for b in json.loads((out / "summary.json").read_text())
            ["rungs"] for r in b["results"]]


def test_two_process_torchrun_search_and_rungs_equal_one_process(setup, tmp_path):
    """2 ranks score different candidates of each generation and train different rung candidates; the
    journal (genomes, losses, abandonment), the rungs and the best specs are those of one process. The
    2-process run resumes a 1-process journal cut inside a generation, so it also shows that a resume
    under torchrun replays it and that journals carry over between process counts."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import torch

    teacher_dir, data = setup
    extra = ("--bins", "2", "--evolution.evaluations", "7", "--fitness.windows", "5", "--rungs.count", "2",
             "--rungs.candidates", "3", "--rungs.tokens", "128", "--fitness.abandon-margin", "0",
             "--fitness.abandon-after", "0.5")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun workers (OMP_NUM_THREADS=1): bit-equal float sums
    try:
        assert main(_args(teacher_dir, data, tmp_path / "one", *extra)) == 0
    finally:
        torch.set_num_threads(threads)
    header, one_rec, _ = read_journal(tmp_path / "one" / "journal.jsonl")
    assert len(one_rec) == 14 and any(r["abandoned"] for r in one_rec)  # generations of 3 + 3 + 1 per bin
    (tmp_path / "two").mkdir()
    shutil.copy(tmp_path / "one" / "journal.jsonl", tmp_path / "two" / "journal.jsonl")
    lines = (tmp_path / "two" / "journal.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "two" / "journal.jsonl").write_text("".join(lines[:1 + 4]))  # killed after 4 of 14 evaluations
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "headstart", *_args(teacher_dir, data, tmp_path / "two", *extra),
           "--resume"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, two_rec, _ = read_journal(tmp_path / "two" / "journal.jsonl")
    assert _same(two_rec) == _same(one_rec)
    assert _rung_results(tmp_path / "two") == _rung_results(tmp_path / "one") != []
    for best in sorted((tmp_path / "one").glob("best-*.yaml")):
        mine, theirs = yaml.safe_load(best.read_text()), yaml.safe_load((tmp_path / "two" / best.name).read_text())
        assert {k: v for k, v in theirs.items() if k != "rung_student"} == {
            k: v for k, v in mine.items() if k != "rung_student"}


def test_options_come_from_a_config_file(setup, tmp_path, capsys):
    teacher_dir, data = setup
    cfg = tmp_path / "search.yaml"
    cfg.write_text(f"teacher: {teacher_dir}\ndata: {data}\nevolution: {{evaluatons: 3}}\n")
    assert main(["search", "--config", str(cfg), "--out", str(tmp_path / "o"), "--bins", "1"]) == 2
    assert "did you mean 'evolution.evaluations'" in capsys.readouterr().err
    cfg.write_text(f"teacher: {teacher_dir}\ndata: {data}\nevolution: {{evaluations: 2, population: 5}}\nbins: 1\n"
                   "fitness: {windows: 2, calibration-windows: 2}\nseq-len: 16\nrungs: {count: 0}\n")
    assert main(["search", "--config", str(cfg), "--out", str(tmp_path / "o"), "--evolution.population", "2"]) == 0
    header, records, _ = read_journal(tmp_path / "o" / "journal.jsonl")
    assert len(records) == 2  # the file's evaluations, the flag's population over the file's: one section merged
    assert header["search"]["population"] == 2 and header["windows"] == 2


def test_training_aware_rungs_pick_the_best_trained_candidate_and_resume_after_a_kill(setup, tmp_path, capsys):
    teacher_dir, data = setup
    out = tmp_path / "out"
    args = _args(teacher_dir, data, out, "--bins", "1", "--evolution.evaluations", "5", "--rungs.count", "2",
                 "--rungs.candidates", "3", "--rungs.tokens", "128")
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    [bin0] = summary["rungs"]
    first = [r for r in bin0["results"] if r["rung"] == 1]
    second = [r for r in bin0["results"] if r["rung"] == 2]
    assert len(first) == 3 and len(second) == 1  # successive halving: 3 -> 3 // 2
    assert {r["tokens"] for r in first} == {128} and second[0]["tokens"] == 256
    # rung 1 took the best three distinct candidates by untrained loss; the best of rung 1 continued
    _, records, _ = read_journal(out / "journal.jsonl")
    by_loss = sorted({r["spec_hash"]: r["loss"] for r in records}.items(), key=lambda kv: (kv[1], kv[0]))
    assert [r["spec_hash"] for r in first] == [h for h, _ in by_loss[:3]]
    assert second[0]["spec_hash"] == min(first, key=lambda r: (r["loss"], r["spec_hash"]))["spec_hash"]
    [best_file] = out.glob("best-*.yaml")
    best = yaml.safe_load(best_file.read_text())
    assert best["trained_loss"] == pytest.approx(second[0]["loss"]) and best["rung_tokens"] == 256
    assert summary["flops"]["rungs"] == sum(r["flops"] for r in bin0["results"]) > 0
    assert summary["flops"]["total"] == sum(v for k, v in summary["flops"].items() if k != "total")
    for rung_dir in (out / "rungs").glob("*/*/rung*"):  # every rung trains from the cut, on a cut student's schedule
        trained = yaml.safe_load((rung_dir / "config.yaml").read_text())
        assert (trained["optim"]["lr"], trained["schedule"]["warmup"]) == (
            INHERITED["optim"]["lr"], INHERITED["schedule"]["warmup"]) != (OptimConfig().lr, ScheduleConfig().warmup)
        assert trained["paths"]["student"] == str(rung_dir.parent / "spec.yaml")
        assert trained["tokens"] == {"rung1": 128, "rung2": 256}[rung_dir.name]

    # a kill during rung 2: its rung.json and export are gone; --resume redoes only that and agrees
    [rung2] = (out / "rungs").glob(f"*/{second[0]['spec_hash']}/rung2")
    for path in (rung2 / "rung.json", rung2 / "student"):
        import shutil

        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert main([*args, "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["rungs"] == summary["rungs"]
    # a resume with other rung settings does not reuse runs trained with the old ones
    capsys.readouterr()
    assert main([*args, "--resume", "--rungs.lr", "1e-4"]) != 0
    assert "trained with other rung settings" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["rungs"] == summary["rungs"]
