"""Progress: library code reports through callbacks; only the command line draws (tqdm) bars."""

from __future__ import annotations

import ast
from pathlib import Path

from tiny import TEXT, tiny_tokenizer

from headstart.data import prepare
from headstart.progress import Feedback, status_line

PACKAGE = Path(__file__).resolve().parents[1] / "headstart"


def _imports_tqdm(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "tqdm" or n.startswith("tqdm.") for n in names):
            return True
    return False


def test_only_the_feedback_module_imports_tqdm():
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _imports_tqdm(p))
    assert users == ["progress.py"], users


def test_library_reports_progress_through_the_callback(tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    for i in range(5):
        (src / f"d{i}.txt").write_text(TEXT + f" {i}")
    calls = []
    prepare([str(src)], tiny_tokenizer(), tmp_path / "data", tokenizer_source="tiny", search_frac=1, val_frac=1,
            workers=1, progress=lambda task, done, total, postfix="": calls.append((task, done, total)))
    assert [c for c in calls if c[0] == "scan"] == [("scan", i, 5) for i in range(1, 6)]  # one source per file
    tokenize = [c for c in calls if c[0] == "tokenize"]
    assert tokenize[0] == ("tokenize", 0, 5) and tokenize[-1] == ("tokenize", 5, 5)


def test_bars_follow_absolute_counts_and_stay_off_when_hidden(monkeypatch):
    with Feedback(bars=True) as bars:
        bars("train", 3, 10)  # a resumed run starts at step 3
        bars("train", 7, 10, "loss=1.0")
        assert bars._bars["train"].n == 7 and bars._bars["train"].total == 10
    assert not bars._bars
    hidden = Feedback(show=False, bars=True)
    hidden("train", 1, 10)
    monkeypatch.setenv("RANK", "1")
    other_rank = Feedback(bars=True)
    other_rank("train", 1, 10)
    assert not hidden._bars and not other_rank._bars


def test_without_a_terminal_a_task_logs_while_it_runs_and_once_when_done(caplog, monkeypatch):
    clock = iter([0.0, 5.0, 25.0, 30.0])
    monkeypatch.setattr("headstart.progress.time.monotonic", lambda: next(clock))
    lines = Feedback(bars=False, every=20.0)
    with caplog.at_level("INFO", logger="headstart"):
        lines("search", 0, 10)
        lines("search", 2, 10)  # 5 s: too soon for a line
        lines("search", 6, 10)  # 25 s: a line with rate and ETA
        lines("search", 10, 10)  # done
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["search: 6/10 (60%), 0.24/s, ETA 0:00:16", "search: done, 10 in 30.0 s (0.333/s)"]


def test_status_line_without_a_total_or_a_rate():
    assert status_line("tokenize", 5, None, 0.0, 0) == "tokenize: 5"
    assert status_line("load", 1, 1, 2.0, 1, finished=True) == "load: done in 2.0 s"
