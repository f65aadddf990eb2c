"""The one write path: atomic files and directories, stale temporaries, confined manifest paths."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from tiny import dead_pid, temp_name_of

from headstart import io
from headstart.errors import HeadstartError, UnsafePathError


def test_files_are_written_whole_and_failures_leave_nothing(tmp_path):
    io.write_text(tmp_path / "a" / "t.txt", "héllo")
    io.write_json(tmp_path / "j.json", {"x": [1, 2]})
    io.write_yaml(tmp_path / "y.yaml", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a" / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    assert list(yaml.safe_load((tmp_path / "y.yaml").read_text())) == ["b", "a"]
    with pytest.raises(TypeError):  # not JSON: the old file stays, no temporary is left
        io.write_json(tmp_path / "j.json", {"x": object()})
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    with pytest.raises(RuntimeError), io.atomic_file(tmp_path / "j.json") as fh:
        fh.write("partial")
        raise RuntimeError("killed")
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "j.json", "y.yaml"]


def test_atomic_dir_creates_refuses_and_cleans_up(tmp_path):
    final = tmp_path / "out"
    with io.atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and io.is_temp_name(tmp.name) and not final.exists()
        (tmp / "f").write_text("1")
    assert (final / "f").read_text() == "1"
    with pytest.raises(FileExistsError):
        with io.atomic_dir(final):
            pass
    with pytest.raises(KeyboardInterrupt), io.atomic_dir(tmp_path / "other") as tmp:
        (tmp / "f").write_text("1")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("exchange", [True, False])
def test_atomic_dir_replaces_without_a_gap(tmp_path, monkeypatch, exchange):
    final = tmp_path / "student"
    final.mkdir()
    (final / "old").write_text("old")
    if not exchange:  # a filesystem without renameat2's exchange: two renames
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    with pytest.raises(ValueError), io.atomic_dir(final, replace=True) as tmp:
        (tmp / "new").write_text("new")
        raise ValueError("failed before the swap")
    assert [p.name for p in final.iterdir()] == ["old"]
    seen = []
    real_rename = os.rename

    def watch(a, b):  # the final name always holds a directory, except between the fallback's two renames
        real_rename(a, b)
        seen.append(final.is_dir())

    monkeypatch.setattr(os, "rename", watch)
    with io.atomic_dir(final, replace=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]
    assert seen == ([] if exchange else [False, True])


def test_stale_temps_of_dead_processes_go_live_ones_stay(tmp_path):
    dead, live = dead_pid(), os.getppid()
    stale_dir = temp_name_of(tmp_path / "student", dead)
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x" * 10)
    stale_file = temp_name_of(tmp_path / "metrics.jsonl", dead)
    stale_file.write_text("x")
    live_dir = temp_name_of(tmp_path / "student", live)
    live_dir.mkdir()
    mine = io.temp_path(tmp_path / "student")
    mine.mkdir()
    other = tmp_path / ".student.tmp-notours"
    other.mkdir()
    removed = io.remove_stale_temps(tmp_path, ".student")
    assert removed == [stale_dir]
    assert stale_file.exists()  # another prefix
    assert sorted(io.remove_stale_temps(tmp_path)) == [stale_file]
    assert live_dir.is_dir() and mine.is_dir() and other.is_dir()


def test_a_set_aside_directory_is_put_back_when_its_final_name_is_missing(tmp_path):
    aside = temp_name_of(tmp_path / "student", dead_pid(), kind="old")
    aside.mkdir()
    (aside / "f").write_text("kept")
    assert io.remove_stale_temps(tmp_path) == []
    assert (tmp_path / "student" / "f").read_text() == "kept"
    aside.mkdir()  # the final name exists again: the aside copy is stale
    assert io.remove_stale_temps(tmp_path) == [aside]


def test_sha256_file(tmp_path):
    path = io.write_bytes(tmp_path / "b", b"abc")
    assert io.sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("entry", ["../x", "/etc/passwd", "a/../../x", "", ".", None, 3])
def test_confined_refuses_entries_that_leave_their_directory(tmp_path, entry):
    with pytest.raises(UnsafePathError) as info:
        io.confined(tmp_path / "data", entry)
    assert isinstance(info.value, HeadstartError) and "\n" not in str(info.value)


def test_confined_accepts_inside_paths_and_refuses_links_out(tmp_path):
    base = tmp_path / "data"
    (base / "train").mkdir(parents=True)
    assert io.confined(base, "train/train_00000.bin") == base / "train" / "train_00000.bin"
    (base / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        io.confined(base, "link/secret")
