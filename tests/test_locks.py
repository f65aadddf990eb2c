"""One writer per output directory: a second writer is refused at once; a killed holder never blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import TEXT, tiny_tokenizer

from headstart.data import prepare
from headstart.errors import OutputError, OutputLockedError
from headstart.io import LOCK_NAME, lock_holder, output_lock

REPO = Path(__file__).resolve().parents[1]

# Takes the lock of argv[1], says so, and waits; with argv[2] == "fork" a child that outlives it is left.
HOLDER = """
import os, sys, time
from headstart.io import output_lock
with output_lock(sys.argv[1]):
    if sys.argv[2] == "fork":
        child = os.fork()
        if child == 0:
            time.sleep(120)
            os._exit(0)
        open(sys.argv[1] + ".child", "w").write(str(child))
    print(os.getpid(), flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    procs = []

    def start(directory: Path, mode: str = "plain") -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), mode], stdout=subprocess.PIPE,
                                text=True, env=env, cwd=tmp_path)
        procs.append(proc)
        assert int(proc.stdout.readline()) == proc.pid  # it holds the lock now
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    out = tmp_path / "out"
    proc = holder(out)
    assert lock_holder(out)["pid"] == proc.pid
    with pytest.raises(OutputLockedError) as err, output_lock(out):
        pass
    text = str(err.value)
    assert "\n" not in text and f"pid {proc.pid}" in text and "-c" in text and str(out) in text
    proc.terminate()
    proc.wait()
    with output_lock(out):  # released on exit
        assert lock_holder(out)["pid"] == os.getpid()
    assert lock_holder(out) is None and not (out / LOCK_NAME).exists()  # a clean release removes the file


def test_a_holder_killed_with_sigkill_never_blocks_the_next_writer(tmp_path, holder):
    out = tmp_path / "out"
    proc = holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / LOCK_NAME).exists()  # the file stays, but no process holds its lock
    assert lock_holder(out) is None
    with output_lock(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_forked_child_does_not_keep_a_killed_parents_lock(tmp_path, holder):
    out = tmp_path / "out"
    proc = holder(out, "fork")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    child = int((tmp_path / "out.child").read_text())
    try:
        os.kill(child, 0)  # still alive
        with output_lock(out):  # the child closed its copy of the lock at fork
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_the_lock_is_reentrant_in_one_process_and_a_failed_block_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    with output_lock(out), output_lock(out):
        assert (out / LOCK_NAME).is_file()
    assert out.is_dir() and not (out / LOCK_NAME).exists()
    fresh = tmp_path / "fresh" / "deeper"
    with pytest.raises(RuntimeError), output_lock(fresh):
        raise RuntimeError("the command failed")
    assert not (tmp_path / "fresh").exists()  # the directories the lock created went with the failure


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OutputError, match="lock file") as err, output_lock(out):
        pass
    assert "\n" not in str(err.value) and victim.read_text() == "keep"


def test_prepare_is_refused_while_another_process_writes_its_out(tmp_path, holder):
    (tmp_path / "in").mkdir()
    for i in range(6):
        (tmp_path / "in" / f"d{i}.txt").write_text(TEXT + str(i))
    out = tmp_path / "out"
    proc = holder(out)
    with pytest.raises(OutputLockedError, match=f"pid {proc.pid}"):
        prepare([tmp_path / "in"], tiny_tokenizer(), out, tokenizer_source="t", workers=1, search_frac=1, val_frac=1)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written by the refused run
    proc.kill()
    proc.wait()
    prepare([tmp_path / "in"], tiny_tokenizer(), out, tokenizer_source="t", workers=2, search_frac=1, val_frac=1)
    assert (out / "manifest.json").is_file() and not (out / LOCK_NAME).exists()


def test_two_prepare_commands_on_one_directory(tmp_path, tiny_teacher_dirs, holder):
    """The CLI's refusal: exit code non-zero, one line naming the holder, the directory untouched."""
    (tmp_path / "in").mkdir()
    for i in range(6):
        (tmp_path / "in" / f"d{i}.txt").write_text(TEXT + str(i))
    out = tmp_path / "out"
    proc = holder(out)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "headstart", "prepare", str(tmp_path / "in"), "--tokenizer",
           str(tiny_teacher_dirs["llama"]), "--out", str(out), "--workers", "1", "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"pid {proc.pid}" in lines[0], run.stderr
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


@pytest.mark.parametrize("command", ["train", "search"])
def test_train_and_search_are_refused_while_another_process_writes_their_out(tmp_path, holder, capsys, command):
    from tiny import prepared_corpus, save_tiny_teacher

    from headstart.cli import main

    teacher = save_tiny_teacher("llama", tmp_path / "teacher")
    data = prepared_corpus(tmp_path)
    out = tmp_path / "out"
    proc = holder(out)
    common = ["--teacher", str(teacher), "--data", str(data), "--out", str(out), "--seq-len", "16", "--batch-size", "2",
              "--no-progress"]
    argv = (["train", *common, "--student", f"random:{teacher}", "--tokens", "64", "--kd.kind", "none"]
            if command == "train" else ["search", *common, "--params", "40k", "--fitness.windows", "2",
                                        "--evolution.evaluations", "2", "--rungs.count", "0"])
    capsys.readouterr()  # the tiny teacher's own save messages
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pid {proc.pid}" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written by the refused run
