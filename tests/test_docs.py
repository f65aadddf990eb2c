"""Every example of README.md and docs/*.md is checked, and the README's headline numbers match the committed JSON.

Shell blocks (```bash, ```sh, ```shell): every line that calls ``headstart <command>`` is parsed by the real
CLI and its config built with ``--print-config`` (exit code 0), run in an empty temporary directory. The
path checks of the config run before ``--print-config`` prints, so the test substitutes, visibly, a stand-in
for every path the line names that does not exist there (:func:`stand_in`): ``--config FILE`` of ``run`` /
``compare`` becomes the embedded demo recipe, other files are created empty, other paths are created as
empty directories. Nothing is loaded or trained. ``torchrun`` / ``srun`` lines must call the console script
as ``"$(which headstart)"`` and pass the same check on the words after it; ``make``, ``pip`` and the other
shell lines are counted as checked by that rule only (they do not call headstart).

Python blocks: every block is compiled, and every ``headstart`` name it imports must exist. A block preceded
by ``<!-- test: run -->`` is executed too, with the substitution below (:data:`TINY`): the builtin teacher
becomes a tiny random llama teacher written by ``tests/tiny.py``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from headstart.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?P<mark><!-- test: (?P<tag>[a-z]+) -->\s*\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)\n```", re.S)
SHELL = {"bash", "sh", "shell"}
FILE_SUFFIXES = (".yaml", ".yml", ".json", ".jsonl", ".txt", ".gguf", ".parquet", ".csv", ".md", ".sh")
WHICH = "$(which headstart)"  # how torchrun finds the console script (one word once the shell unquotes it)
TINY = {"builtin:smollm2-135m": "{teacher}"}  # what a `<!-- test: run -->` python block runs on instead


def blocks() -> list[tuple[str, str, str, str | None]]:
    """``(page, language, body, tag)`` of every fenced block of the pages."""
    found = []
    for page in PAGES:
        for m in FENCE.finditer(page.read_text()):
            found.append((page.name, m["lang"], m["body"], m["tag"]))
    return found


def shell_commands(body: str) -> list[list[str]]:
    """The words of each command of a shell block (continuations joined, comments dropped)."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words, skip = [], False
        for word in lexer:
            if skip:
                skip = False
            elif word in (">", ">>", "<", "2>", "&>"):
                skip = True  # a redirection and its target are the shell's, not the command's
            elif word in ("|", "||", "&&", ";", "&"):
                commands.append(words)
                words = []
            else:
                words.append(word)
        commands.append(words)
    return [words for words in commands if words]


def stand_in(words: list[str], root: Path, recipe: str) -> None:
    """Create in ``root`` every path that ``words`` (a headstart command line) names and that is missing there."""
    command = words[0]
    for before, word in zip(["", *words], words, strict=False):
        if word.startswith("-") or "://" in word or word.startswith("builtin:"):
            continue
        path = root / word.removeprefix("random:")
        if path.exists() or not ("/" in word or word.endswith(FILE_SUFFIXES)):
            continue
        if re.fullmatch(r"\w[\w.-]*/[\w.-]+", word) and before in ("--teacher", "--tokenizer"):
            continue  # a hub id: the loader's business, not the path check's
        if word.endswith(FILE_SUFFIXES):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(recipe if before == "--config" and command in ("run", "compare") else "{}\n")
        else:
            path.mkdir(parents=True, exist_ok=True)


def check_headstart(words: list[str], root: Path, recipe: str, where: str) -> None:
    """``headstart WORDS --print-config`` exits 0 in ``root`` (the stand-ins created first)."""
    assert words and words[0] != "-m", f"{where}: call the console script, not python -m: {words}"
    if words[0] == "--version" or "--help" in words or "--print-recipe" in words:
        argv = words
    else:
        stand_in(words, root, recipe)
        argv = [*words, "--print-config"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(argv)
    assert code == 0, f"{where}: `headstart {shlex.join(words)}` failed:\n{out.getvalue()}"


def check_shell(body: str, root: Path, recipe: str, where: str) -> int:
    """Check every command of a shell block; the number of commands checked."""
    n = 0
    for words in shell_commands(body):
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]  # an environment assignment before the command
        if not words:
            continue
        n += 1
        if words[0] == "headstart":
            check_headstart(words[1:], root, recipe, where)
        elif "torchrun" in words or words[0] == "srun":
            line = " ".join(words)
            assert "-m" not in words[:words.index(WHICH)] if WHICH in words else "-m" not in words, \
                f"{where}: torchrun runs the console script, never -m headstart: {line}"
            if "torchrun" in words:
                assert WHICH in words, f"{where}: torchrun must run \"$(which headstart)\": {line}"
                check_headstart(words[words.index(WHICH) + 1:], root, recipe, where)
        else:
            assert "python -m headstart" not in " ".join(words), f"{where}: call the console script"
    return n


def check_python(body: str, tag: str | None, root: Path, where: str) -> None:
    """Compile ``body``, check the headstart names it imports, and run it when tagged ``run``."""
    tree = ast.parse(body, where)
    compile(tree, where, "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("headstart"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("headstart"):
                    importlib.import_module(alias.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "headstart":
            assert hasattr(importlib.import_module("headstart"), node.attr), f"{where}: headstart has no {node.attr}"
    if tag == "run":
        from tests.tiny import save_tiny_teacher

        teacher = save_tiny_teacher("llama", root / "tiny-teacher")
        code = body
        for real, tiny in TINY.items():
            code = code.replace(real, tiny.format(teacher=teacher))
        exec(compile(code, where, "exec"), {"__name__": "__docs__"})


def test_every_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from headstart.cli.summaries import demo_text

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = demo_text()
    found = [b for b in blocks() if b[1] in SHELL or b[1] == "python"]
    assert len(found) >= 20
    n, failures = 0, []
    for i, (page, lang, body, tag) in enumerate(found):
        where = f"{page} block {i} ({lang})"
        try:
            if lang in SHELL:
                assert check_shell(body, tmp_path, recipe, where) >= 1, f"{where}: no command"
            else:
                check_python(body, tag, tmp_path, where)
        except Exception as exc:  # noqa: BLE001 - every wrong example is listed, not just the first
            failures.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        n += 1
    print(f"checked {n} blocks")
    assert not failures, "\n".join(failures)
    assert n == len(found)


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines"


def headline_rows() -> list[tuple[int, str, float, float, int]]:
    """``(budget, run, token ratio, FLOPs ratio, seeds)`` of each row of the README's headline table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- headline table -->", 2)[1]
    rows = []
    for line in table.splitlines():
        m = re.fullmatch(r"\| ([\d,]+) \| `([\w-]+)` \| ([\d.]+)× \| ([\d.]+)× \| (\d+) \|", line.strip())
        if m:
            rows.append((int(m[1].replace(",", "")), m[2], float(m[3]), float(m[4]), int(m[5])))
    return rows


def test_headline_numbers_match_json() -> None:
    data = json.loads((ROOT / "docs" / "token_efficiency.json").read_text())
    rows = headline_rows()
    assert len(rows) >= 3
    for budget, run, tokens, flops, seeds in rows:
        got = data["results"][str(budget)][run]
        assert round(got["token_ratio_stats"]["mean"], 1) == tokens, (budget, run)
        assert round(got["flops_ratio_stats"]["mean"], 1) == flops, (budget, run)
        assert len(got["seeds"]) == seeds and got["token_ratio_stats"]["not_reached"] == 0
