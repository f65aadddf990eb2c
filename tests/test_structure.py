"""The package's shape: no import loops (lazy and type-only imports count), small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "headstart"
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 64


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str] | None) -> set[str]:
    """Every package module ``name`` imports anywhere in its body (module, function or TYPE_CHECKING level);
    with ``known=None`` every imported name, whether it exists or not."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found |= {t for t in targets if (known is None or t in known) and t != name}
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_package_has_no_import_loops():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    graph = {name: {d for d in deps if d != "headstart"} for name, deps in graph.items()}  # the package root
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_loop():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _is_under(target: str, module: str) -> bool:
    return target == module or target.startswith(module + ".")


def test_only_the_cli_imports_the_cli_and_nothing_imports_the_old_commands():
    """The library never reaches up into the command line (``headstart.cli`` parses, prints and exits; it
    calls the stages, not the other way round; ``python -m headstart`` is its entry point), and nothing in
    the package or the benchmarks imports the old ``headstart.commands`` package (a test that did would
    fail on its own import)."""
    offenders = []
    for name, path in sorted(_modules().items()):
        found = _imports(name, path, None)
        if not _is_under(name, "headstart.cli") and name != "headstart.__main__":
            offenders += [f"{name} imports {t}" for t in sorted(found) if _is_under(t, "headstart.cli")]
        offenders += [f"{name} imports {t}" for t in sorted(found) if _is_under(t, "headstart.commands")]
    for path in sorted((PACKAGE.parent / "bench").glob("*.py")):
        found = _imports(path.stem, path, None)
        offenders += [f"{path.name} imports {t}" for t in sorted(found) if _is_under(t, "headstart.commands")]
    assert not offenders, offenders


def test_the_import_finder_sees_lazy_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from headstart.cli import main\n    from . import commands\n")
    assert _imports("headstart.x.m", module, None) >= {"headstart.cli", "headstart.cli.main", "headstart.x.commands"}


def test_modules_and_functions_stay_small():
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{path.name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"{path.name}:{node.name}: {length} lines")
    assert not too_big, too_big


def test_selection_lives_in_one_module():
    """Importance/first-k index selection is coded once, in ``headstart.selection``."""
    users = [p.name for p in PACKAGE.rglob("*.py") if "argsort" in p.read_text() and p.name != "selection.py"]
    assert "space.py" not in users and "spec.py" not in users, users
