"""Writes go only onto regular files and directories inside --out, and a full disk is one line."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import subprocess

import numpy as np
import pytest
import torch
from tiny import TEXT, tiny_tokenizer

from headstart import io
from headstart.data import prepare
from headstart.errors import DataError, DiskFullError, OutputError


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _special(tmp_path, kind):
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # the numbers of /dev/full
    return path


SPECIAL = ["fifo", "socket", "device"]
WRITERS = {
    "write_json": lambda p: io.write_json(p, {"loss": 1.0}),
    "write_text": lambda p: io.write_text(p, "x"),
    "write_bytes": lambda p: io.write_bytes(p, b"x"),
    "write_yaml": lambda p: io.write_yaml(p, {"a": 1}),
    "atomic_dir": lambda p: io.atomic_dir(p, replace=True).__enter__(),
}


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_special_file_is_never_replaced(tmp_path, kind, writer):
    path = _special(tmp_path, kind)
    mode = os.lstat(path).st_mode
    with pytest.raises(OutputError) as err:
        WRITERS[writer](path)
    text = _one_line(err)
    assert str(path) in text and "not a" in text
    assert os.lstat(path).st_mode == mode and sorted(tmp_path.iterdir()) == [path]  # untouched, no temporary


def test_a_directory_output_refuses_a_file_or_a_link(tmp_path):
    (tmp_path / "file").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for name in ("file", "link"):
        with pytest.raises(OutputError, match="not a directory"), io.atomic_dir(tmp_path / name, replace=True):
            pass
    assert (tmp_path / "file").read_text() == "keep" and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link"]


def test_a_file_output_replaces_a_link_without_following_it(tmp_path):
    target = tmp_path / "target.json"
    target.write_text("keep")
    (tmp_path / "out.json").symlink_to(target)
    io.write_json(tmp_path / "out.json", {"a": 1})
    assert target.read_text() == "keep" and not (tmp_path / "out.json").is_symlink()


def test_output_tree_helpers_name_the_first_link(tmp_path):
    root, outside = tmp_path / "out", tmp_path / "outside"
    (root / "ckpt").mkdir(parents=True)
    outside.mkdir()
    io.check_output_tree(root)
    assert io.output_path(root, "ckpt/step_1/model.safetensors") == root / "ckpt" / "step_1" / "model.safetensors"
    (root / "ckpt" / "step_1").symlink_to(outside, target_is_directory=True)
    for call in (lambda: io.check_output_tree(root), lambda: io.output_path(root, "ckpt/step_1/model.safetensors")):
        with pytest.raises(OutputError) as err:
            call()
        assert f"{root / 'ckpt' / 'step_1'} inside --out {root} is a symbolic link" in _one_line(err)
    with pytest.raises(OutputError, match="not a path inside"):
        io.output_path(root, "../escape")
    linked_root = tmp_path / "linked"
    linked_root.symlink_to(outside, target_is_directory=True)
    io.check_output_tree(linked_root)  # --out itself may be a link: the user chose where it points


def test_the_cache_writer_refuses_a_link_as_its_out(tmp_path):
    from train_support import VOCAB, confident_teacher

    from headstart.training.teacher_cache import build_cache

    outside = tmp_path / "outside"
    (tmp_path / "cache").symlink_to(outside, target_is_directory=True)
    windows = torch.randint(0, VOCAB, (4, 9))
    with pytest.raises(OutputError, match="is a symbolic link, not a directory"):
        build_cache(confident_teacher(), [windows], tmp_path / "cache", k=4, vocab=VOCAB, seq_len=8, meta={})
    assert not outside.exists()


# -- a full disk -----------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs (as root where mounting is allowed), else ``None``."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        yield None
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _needs(full_disk):
    if full_disk is None:
        pytest.skip("no small tmpfs can be mounted here (needs root)")
    return full_disk


def test_a_safetensors_write_on_a_full_disk_is_one_line_and_leaves_nothing(full_disk):
    from safetensors.torch import save_file

    disk = _needs(full_disk)
    with pytest.raises(DiskFullError) as err, io.atomic_dir(disk / "student") as tmp:
        save_file({"w": torch.zeros(1 << 19)}, str(tmp / "model.safetensors"))  # 2 MiB onto 1 MiB
    text = _one_line(err)
    assert "disk is full" in text and str(disk / "student") in text and "free space" in text
    assert list(disk.iterdir()) == []


@pytest.mark.parametrize("write", [
    lambda fh: np.save(fh, np.zeros(1 << 18)),  # numpy reports a short write with no errno
    lambda fh: torch.save({"w": torch.zeros(1 << 19)}, fh),  # torch's zip writer
    lambda fh: fh.write(b"\0" * (2 << 20)),
], ids=["numpy", "torch", "plain"])
def test_every_library_s_full_disk_is_recognised(full_disk, write):
    disk = _needs(full_disk)
    with pytest.raises(DiskFullError, match="disk is full") as err, io.atomic_file(disk / "x.bin", binary=True) as fh:
        write(fh)
    _one_line(err)
    assert list(disk.iterdir()) == []


def test_prepare_on_a_full_disk_says_how_to_resume(full_disk, tmp_path):
    disk = _needs(full_disk)
    (tmp_path / "in").mkdir()
    for i in range(20):  # about 1.3M tokens: 2.6 MB of shards onto 1 MiB
        (tmp_path / "in" / f"d{i}.txt").write_text((TEXT + str(i)) * 600)
    with pytest.raises(DataError) as err:
        prepare([tmp_path / "in"], tiny_tokenizer(), disk / "out", tokenizer_source="t", workers=1,
                shard_tokens=1 << 20, search_frac=2, val_frac=2)
    assert "disk is full" in _one_line(err) and "resumes" in str(err.value)
    assert not [p for p in disk.rglob("*") if io.is_temp_name(p.name)]


def test_a_full_disk_without_a_tmpfs_is_recognised_by_its_errno(tmp_path):
    with pytest.raises(DiskFullError) as err, io.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert "disk is full" in _one_line(err) and sorted(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="unrelated"), io.atomic_file(tmp_path / "f.txt"):
        raise RuntimeError("unrelated")  # other failures pass through unchanged
    with contextlib.suppress(FileNotFoundError):
        assert sorted(tmp_path.iterdir()) == []
