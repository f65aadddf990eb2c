"""The documented launch paths run the installed package, never a `headstart/` folder in the working
directory (the console script, and torchrun given the console script's path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import headstart

SCRIPT = shutil.which("headstart") or str(Path(sys.executable).parent / "headstart")


@pytest.fixture
def shadowed(tmp_path) -> Path:
    """A working directory whose `headstart/` package would leave a marker if it were imported."""
    fake = tmp_path / "headstart"
    fake.mkdir()
    (fake / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\nraise SystemExit(99)\n")
    (fake / "__main__.py").write_text("raise SystemExit(99)\n")
    return tmp_path


@pytest.mark.skipif(not Path(SCRIPT).is_file(), reason="the console script is not installed")
@pytest.mark.parametrize("launch", ["console script", "torchrun"])
def test_a_headstart_folder_in_the_working_directory_is_never_run(shadowed, launch):
    cmd = [SCRIPT, "--version"] if launch == "console script" else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", SCRIPT, "--version"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(cmd, cwd=shadowed, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert headstart.__version__ in run.stdout
    assert not (shadowed / "imported").exists()
