"""The code's shape stays one a newcomer can walk: imports one way, small modules and functions.

`splitrec_core`'s imports form no cycle (every import counts: under TYPE_CHECKING and inside
functions too) and never reach Prefect; no module of the library, the tasks or the flows is
over 300 lines, and no function there over 50 lines or 7 parameters.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

CODE = ("splitrec_core", "tasks", "flows", "deployments")
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS = 300, 50, 7


def _modules(package: str) -> dict[str, Path]:
    """Every module of `package` by its dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(module: str, path: Path) -> Iterator[str]:
    """The dotted names `module` imports, anywhere in it (relative ones made absolute)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[:None if path.name == "__init__.py" else -1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module → the modules of `package` it imports (a package's own parents left out)."""
    modules = _modules(package)

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {m: {o for name in _imported(m, path) if (o := owner(name)) and o != m
                and not m.startswith(o + ".")}
            for m, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            if group:
                found.append(sorted([module, *group]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_library_imports_one_way():
    graph = _import_graph("splitrec_core")
    assert len(graph) > 40  # the walk found the library
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_prefect():
    for module, path in _modules("splitrec_core").items():
        assert not [n for n in _imported(module, path) if n.split(".")[0] == "prefect"], module


@pytest.mark.parametrize("package", CODE)
def test_no_module_is_over_300_lines(package: str):
    long = {str(p.relative_to(REPO)): n for p in _modules(package).values()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


@pytest.mark.parametrize("package", CODE)
def test_no_function_is_over_50_lines_or_7_parameters(package: str):
    large = []
    for path in _modules(package).values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
                count = (len(names) + bool(args.vararg) + bool(args.kwarg)
                         - (names[:1] in (["self"], ["cls"])))
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES or count > MAX_PARAMETERS:
                    large.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: "
                                 f"{lines} lines, {count} parameters")
    assert large == []
