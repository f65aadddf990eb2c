"""The output directory of ``prepare``: refusals, reuse, and the checkpoint of an interrupted run.

A directory is ours when it holds nothing but ``manifest.json``, ``.progress.json``, the split
folders and our temporary files. It is refused when it belongs to another tokenizer (unless
``overwrite``), or when it holds anything else.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.shards import MANIFEST, SPLITS, map_shard, read_manifest, write_json
from headstart.errors import DataError
from headstart.io import LOCK_NAME, confined, is_temp_name, remove_stale_temps

log = logging.getLogger(__name__)

PROGRESS = ".progress.json"


def _ours(name: str) -> bool:
    return name in (MANIFEST, PROGRESS, LOCK_NAME, *SPLITS) or is_temp_name(name)


def check_out_dir(out: Path, fingerprint: str, overwrite: bool) -> None:
    """Refuse a directory of another tokenizer, or a non-empty directory that is not ours."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a directory")
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name))
    if foreign:
        raise DataError(
            f"--out {out} is not empty and holds no prepared corpus ({', '.join(foreign[:3])}); choose a new directory"
        )
    for name in (MANIFEST, PROGRESS):
        path = out / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            have = data["tokenizer"]["fingerprint"] if "tokenizer" in data else data["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            have = None
        if have is not None and have != fingerprint and not overwrite:
            raise DataError(
                f"--out {out} holds tokens of another tokenizer ({have}, this one is {fingerprint}); "
                "choose another directory or pass --overwrite to replace them"
            )


def _clear(out: Path) -> None:
    for split in SPLITS:
        if (out / split).is_dir():
            shutil.rmtree(out / split)
    for name in (MANIFEST, PROGRESS):
        (out / name).unlink(missing_ok=True)


def reusable(out: Path, key: str, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of a finished, intact preparation with ``key``; else clear what must go."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    manifest = manifest if isinstance(manifest, dict) else {}
    if manifest.get("key") == key and not overwrite:
        try:
            manifest = read_manifest(out)  # its fields checked, then every shard's bytes
            for split in SPLITS:
                for shard in manifest["splits"][split]["shards"]:
                    map_shard(confined(out, shard["file"]), np.dtype(manifest["dtype"]), int(shard["tokens"]),
                              shard["sha256"], manifest["vocab_size"])
            (out / PROGRESS).unlink(missing_ok=True)  # left over if a run stopped right after its manifest
            return manifest
        except DataError as exc:
            log.warning("preparing %s again: %s", out, exc)
    elif manifest and not overwrite:
        raise DataError(
            f"--out {out} already holds a corpus prepared from other inputs or options (created "
            f"{manifest.get('created', '?')}); choose another directory or pass --overwrite to replace it"
        )
    _clear(out)
    return None


def start_state(out: Path, key: str, fingerprint: str) -> dict[str, Any]:
    """The checkpoint of an interrupted run with the same key, else a fresh one; drop unrecorded files."""
    fresh = {
        "key": key,
        "fingerprint": fingerprint,
        "docs_done": 0,
        "empty_documents": 0,
        "splits": {s: {"tokens": 0, "documents": 0, "names": [], "shards": []} for s in SPLITS},
    }
    state = fresh
    if (out / PROGRESS).is_file():
        try:
            saved = json.loads((out / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if isinstance(saved, dict) and saved.get("key") == key:
            state = saved
            if state["docs_done"]:
                log.info("resuming %s: %d documents already done", out, state["docs_done"])
        else:
            log.warning("discarding an unfinished preparation of other inputs or options in %s", out)
    out.mkdir(parents=True, exist_ok=True)
    keep = {sh["file"] for sp in state["splits"].values() for sh in sp["shards"]}
    for split in SPLITS:
        remove_stale_temps(out / split)
        for path in (out / split).glob("*") if (out / split).is_dir() else ():
            if path.is_file() and not is_temp_name(path.name) and f"{split}/{path.name}" not in keep:
                path.unlink()
    remove_stale_temps(out)
    write_json(out / PROGRESS, state)
    return state
