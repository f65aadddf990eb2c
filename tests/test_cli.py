"""The generated command line: every command's --help, no torch for the parser, configs from files and flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from headstart import __version__
from headstart.cli import MALLOC_ENV, load, main
from headstart.cli.commands import COMMANDS, build_parser, resolve
from headstart.config import build, load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"] if command else ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: headstart") and "--help" in out


def test_help_does_not_import_torch():
    code = ("import sys; from headstart.cli import main; assert main(['train', '--help']) == 0; "
            "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_shipped_recipe_and_documented_recipe_loads():
    recipes = sorted((ROOT / "headstart" / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        load_recipe(yaml.safe_load(path.read_text()), str(path))
    documented = 0
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = [b.split("```", 1)[0] for b in page.read_text().split("```yaml\n")[1:]]
        for data in (yaml.safe_load(b) for b in blocks):
            if isinstance(data, dict) and "teacher" in data:  # a whole recipe (other blocks are sections)
                load_recipe(data, str(page))
                documented += 1
    assert documented, "the docs show a recipe"


def test_config_file_and_flags_fill_the_same_dataclass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("{}\n")
    (tmp_path / "d").mkdir()
    cfg = tmp_path / "train.yaml"
    cfg.write_text("student: s.yaml\ndata: d\nout: o\nteacher: t\ntokens: 1e6\nseq-len: 128\nkd: {kind: none}\n"
                   "optim: {weight-decay: 0.0}\n")
    args = build_parser(__version__).parse_args(["train", "--config", str(cfg), "--seq-len", "64",
                                                 "--optim.lr", "3e-4"])
    paths, train = load("train", args)
    assert (paths.student, paths.data, paths.out, paths.teacher) == ("s.yaml", "d", "o", "t")
    assert (train.tokens, train.seq_len, train.optim.lr, train.kd.kind) == (1_000_000, 64, 3e-4, "none")
    assert train.optim.weight_decay == 0.0  # a file's section and a flag of the same section merge


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "d", "--out", "o"], "--student is required"),
    (["train", "--student", "s.yaml", "--data", "d", "--out", "o", "--tokens", "lots"], "tokens must be an integer"),
    (["train", "--student", "s.yaml", "--data", "d", "--out", "o", "--kd.kind", "fwd"], "kd.kind 'fwd' is not one of"),
    (["train", "--student", "missing.yaml", "--data", "d", "--out", "o"], "student missing.yaml does not exist"),
    (["search", "--teacher", "t", "--data", "d", "--out", "o", "--params", "1M", "--evolution.population", "1"],
     "evolution.population must be at least 2, got 1"),
    (["search", "--teacher", "t", "--data", "d", "--out", "o", "--params", "1M", "--device", "bogus"],
     "device 'bogus' is not a device"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--student", "s.yaml", "--data", "d", "--out", "o", "--optim.l", "1"], "did you mean --optim.lr?"),
    (["eval", "ckpt", "--data", "d", "--text", "t.txt"], "either --data or --text"),
    (["extract", "--teacher", "t", "--out", "o", "--spec", "s.yaml", "--mlp", "3"], "either --spec or plain sizes"),
    (["inspect"], "TEACHER is required"),
    (["demo", "--config", "x.yaml"], "unrecognized arguments: --config x.yaml"),
])
def test_bad_flags_give_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths are checked before any work: give the ones that should exist
    (tmp_path / "s.yaml").write_text("{}\n")
    (tmp_path / "t.txt").write_text("text\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "ckpt").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_inspect_takes_the_teacher_as_positional(tiny_teacher_dirs, capsys):
    assert main(["inspect", str(tiny_teacher_dirs["llama"]), "--json"]) == 0
    assert '"model_type": "llama"' in capsys.readouterr().out


def test_only_rank_zero_prints(tiny_teacher_dirs, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert main(["inspect", str(tiny_teacher_dirs["llama"])]) == 0
    assert capsys.readouterr().out == ""


def test_bad_recipe_fails_before_any_stage(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    out = tmp_path / "out"
    recipe.write_text(yaml.safe_dump({"teacher": "builtin:smollm2-135m", "out": str(out),
                                      "search": {"params": "50M"}, "train": {"tokens": "1e6x"}}))
    proc = subprocess.run([sys.executable, "-m", "headstart", "run", "--config", str(recipe)], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HEADSTART_NO_REEXEC": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"headstart run: error: train.tokens must be an integer, got '1e6x' in {recipe}"]
    assert not out.exists()


def test_print_recipe_into_a_closed_pipe_is_quiet(tmp_path):
    proc = subprocess.run(f"{sys.executable} -m headstart demo --print-recipe 2>{tmp_path / 'err'} | head -1",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("#")
    assert "Traceback" not in (tmp_path / "err").read_text()


def test_recipe_flags_override_sections():
    args = build_parser(__version__).parse_args(["demo", "--train.tokens", "2048", "--search.evolution.evaluations",
                                                 "3", "--train.optim.lr", "2e-3", "--out", "x"])
    paths, recipe = load("demo", args)
    assert paths is None
    assert (recipe.train.tokens, recipe.search.evolution.evaluations, recipe.train.optim.lr, recipe.out) == (
        2048, 3, 2e-3, "x")
    assert recipe.train.kd.kind == "forward"  # the rest is the embedded recipe's
    assert recipe.search.evolution.population == 6 and recipe.train.schedule.warmup == 0.1


def test_every_config_builds_from_its_defaults():
    for cmd in COMMANDS.values():
        build(resolve(cmd.options), {"search": {"params": "1M"}} if cmd.recipe else {})


def test_print_config_shows_the_resolved_options_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "s.yaml").write_text("{}\n")
    assert main(["train", "--student", "s.yaml", "--data", "d", "--out", "o", "--optim.lr", "2e-3",
                 "--print-config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["student"], shown["out"], shown["optim"]["lr"], shown["kd"]["kind"]) == ("s.yaml", "o", 2e-3,
                                                                                           "forward")
    assert not (tmp_path / "o").exists()


def test_version_and_underscored_flags(capsys, tmp_path, monkeypatch):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"headstart {__version__}"
    args = build_parser(__version__).parse_args(["demo", "--train.optim.weight-decay", "0.2"])
    assert load("demo", args)[1].train.optim.weight_decay == 0.2
    from headstart.config.flags import normalize_argv

    argv = normalize_argv(["demo", "--train.optim.weight_decay", "0.3"])
    assert load("demo", build_parser(__version__).parse_args(argv))[1].train.optim.weight_decay == 0.3
    assert main(["demo", "--train.tok", "1"]) == 2  # no abbreviations
    assert "unrecognized arguments: --train.tok" in capsys.readouterr().err


def test_a_headstart_folder_in_the_working_directory_is_never_imported(tmp_path):
    """The long commands re-execute themselves; the re-executed process must not import ./headstart."""
    fake = tmp_path / "headstart"
    fake.mkdir()
    marker = tmp_path / "imported-the-wrong-package"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (fake / "cli.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    # what the console script does: the working directory is not on sys.path in the first process
    launcher = "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; " \
               "from headstart.cli import main; sys.exit(main())"
    env = {k: v for k, v in os.environ.items() if k not in ("HEADSTART_NO_REEXEC", *MALLOC_ENV)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", launcher, "train", "--student", "s", "--data", ".", "--out", "o",
                           "--tokens", "lots"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "tokens must be an integer" in proc.stderr
    assert not marker.exists()
