"""The search journal: one JSON line per evaluation, after a header line that pins what was searched.

The header holds the teacher's, the data's and the space's fingerprints and the seed; resuming a
journal written for anything else is refused. Each evaluation line is flushed and fsynced as it is
written (a generation's lines once the whole generation is scored), so a killed search loses at most
the generation in flight. On resume, a line that cannot be
read (e.g. cut off by a kill) is skipped with a warning and a count, and kept aside in
``<journal>.corrupt`` instead of being dropped silently.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from headstart.errors import CheckpointError
from headstart.io import check_target, write_text

log = logging.getLogger(__name__)

KIND = "headstart-search-journal"
VERSION = 1
MATCH_KEYS = ("teacher", "data", "space", "seed", "search")
_RECORD_KEYS = ("run", "bin", "spec_hash", "loss")


def read_journal(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """``(header, records, bad_lines)`` of a journal file.

    A file that is not a journal (binary data, no header line, another kind or version) raises one
    :class:`CheckpointError` line; a record that does not parse or lacks its typed fields is returned
    among ``bad_lines``.
    """
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not a headstart search journal (binary data); remove it or choose "
                              "another --out") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read the journal {path} ({exc.strerror or exc}); choose another --out") from None
    if not lines:
        raise CheckpointError(f"journal {path} is empty; remove it or choose another --out")
    try:
        header = json.loads(lines[0])
    except (json.JSONDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a headstart search journal (bad first line); choose another --out")
    if header.get("version") != VERSION:
        raise CheckpointError(f"journal {path} has version {header.get('version')!r}, this headstart writes "
                              f"{VERSION}; start a new search in another --out")
    records, bad = [], []
    for line in lines[1:]:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            bad.append(line)
            continue
        if not _well_formed(rec):
            bad.append(line)
            continue
        records.append(rec)
    return header, records, bad


def _well_formed(rec: Any) -> bool:
    """Whether a journal line holds a record whose fields have the types the search reads."""
    if not isinstance(rec, dict) or any(k not in rec for k in _RECORD_KEYS):
        return False
    loss, bin_ = rec["loss"], rec["bin"]
    number = isinstance(loss, (int, float)) and not isinstance(loss, bool)
    return (isinstance(rec["run"], str) and isinstance(rec["spec_hash"], str) and (loss is None or number)
            and isinstance(bin_, int) and not isinstance(bin_, bool) and bin_ >= 0
            and isinstance(rec.get("scored_flops", 0), int))


def loss_of(record: dict[str, Any]) -> float:
    """A record's loss (``inf`` for a non-finite loss, stored as null)."""
    loss = record.get("loss")
    return float("inf") if loss is None else float(loss)


class Journal:
    """An append-only JSONL journal. ``write=False`` (non-zero ranks) reads but never writes."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], resume: bool = False,
                 write: bool = True) -> None:
        self.path = Path(path)
        self.write = write
        self.header = {"kind": KIND, "version": VERSION, **header}
        self.records: list[dict[str, Any]] = []
        self.skipped = 0
        if write:  # appended in place: never through a link, never onto a special file
            check_target(self.path, "regular")
        if self.path.exists() and not resume and write:
            raise CheckpointError(
                f"{self.path} already exists; pass --resume to continue that search or choose another --out"
            )
        if self.path.exists() and resume:
            self._resume()
        else:
            if resume:
                log.warning("nothing to resume at %s; starting a new search", self.path)
            if write:
                self._rewrite([])
        self._file = open(self.path, "a") if write else None  # noqa: SIM115 (closed in close())

    def _resume(self) -> None:
        old, records, bad = read_journal(self.path)
        for key in MATCH_KEYS:
            if old.get(key) != self.header.get(key):
                raise CheckpointError(
                    f"journal {self.path} was written for another {key} ({old.get(key)!r}, now "
                    f"{self.header.get(key)!r}); resume with the same teacher, data, space, seed and search "
                    "settings, or use another --out"
                )
        self.records = records
        self.skipped = len(bad)
        if bad:
            log.warning("journal %s: skipped %d unreadable line(s), kept in %s.corrupt", self.path, len(bad),
                        self.path.name)
            if self.write:
                check_target(self.path.with_name(self.path.name + ".corrupt"), "regular")
                with open(self.path.with_name(self.path.name + ".corrupt"), "a") as f:
                    f.write("\n".join(bad) + "\n")
                self._rewrite(records)
        log.info("resuming %s: %d evaluation(s) already done", self.path, len(records))

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        write_text(self.path, "".join(json.dumps(rec, separators=(",", ":")) + "\n" for rec in [self.header, *records]))

    def append(self, record: dict[str, Any]) -> None:
        """Add one evaluation (flushed and fsynced before returning)."""
        rec = dict(record)
        if rec.get("loss") is not None and not math.isfinite(rec["loss"]):
            rec["loss"] = None
        self.records.append(rec)
        if self._file is not None:
            self._file.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file (the journal stays readable)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
