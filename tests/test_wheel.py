"""The built wheel, installed with its base dependencies only (no extras), works from an empty directory.

The fresh venv reuses the already installed torch (symlinked onto its path): installing torch again
would pull a multi-GB build. Everything else comes from the package registry, as for a user.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "data" / "corpus"


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        names.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return names


def _torch_shim(shim: Path) -> None:
    """Symlinks to torch and everything it needs, for a .pth file of the fresh venv."""
    todo, seen = ["torch"], set()
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(name)
        todo += _requirement_names(dist)
        for top in {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (shim / top).exists():
                (shim / top).symlink_to(src)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def test_wheel_installs_and_runs_a_whole_pipeline_without_extras(tiny_teacher_dirs, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_OFFLINE": "1", "HEADSTART_NO_REEXEC": "1",
           "HEADSTART_CACHE": str(tmp_path / "cache")}
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(ROOT)], tmp_path, {**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    (wheel,) = dist.glob("headstart-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "headstart/recipes/demo.yaml" in zf.namelist()
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    base = [line.split(":", 1)[1].strip() for line in meta.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]
    venv = tmp_path / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], tmp_path, env)
    site = next((venv / "lib").glob("python3*/site-packages"))
    shim = tmp_path / "torch-shim"
    shim.mkdir()
    _torch_shim(shim)
    (site / "torch-shim.pth").write_text(f"{shim}\n")
    py = str(venv / "bin" / "python")
    reqs = [r for r in base if not r.startswith("torch")]
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs], tmp_path, env)
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)], tmp_path, env)
    probe = subprocess.run([py, "-c", "import matplotlib"], capture_output=True, timeout=60)
    assert probe.returncode != 0, "matplotlib must not be a base dependency of this test's venv"

    empty = tmp_path / "empty"
    empty.mkdir()
    headstart = str(venv / "bin" / "headstart")
    assert "usage: headstart" in _run([headstart, "--help"], empty, env).stdout
    assert _run([headstart, "demo", "--print-recipe"], empty, env).stdout.startswith("#")
    recipe = empty / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "teacher": str(tiny_teacher_dirs["smollm2"]), "out": "out", "seed": 0,
        "corpus": [str(CORPUS)], "prepare": {"search_frac": 1, "val_frac": 1, "workers": 1},
        "search": {"params": "110K", "tolerance": 0.25, "seq_len": 32, "batch_size": 2,
                   "evolution": {"evaluations": 3, "population": 2},
                   "fitness": {"windows": 2, "calibration_windows": 2}},
        "train": {"tokens": 512, "seq_len": 32, "batch_size": 4, "validation": {"every": 2, "windows": 2},
                  "checkpoint": {"every": 4}},
        "compare": {"runs": ["random-ce", "searched-kd"]},
        "eval": {"windows": 2, "seq_len": 32, "max_new_tokens": 2},
    }))
    proc = _run([headstart, "run", "--config", str(recipe), "--no-progress"], empty, env)
    assert "report: out/report/report.md" in proc.stdout
    report = (empty / "out" / "report" / "report.md").read_text()
    assert "plots skipped: matplotlib is not installed" in report and "| random init, CE |" in report
