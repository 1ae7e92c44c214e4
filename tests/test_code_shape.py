"""Readability rules of the code base that a reviewer would otherwise check by hand.

- No function of the library or the experiments is longer than :data:`MAX_FUNCTION_LINES` lines
  below its docstring: a longer one is split where its steps are.
- ``experiments`` has no import cycle between its modules (imports inside functions included,
  those for annotations only left out).
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
PACKAGES = ("gumbel_jax", "experiments")


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _lines_below_docstring(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = function.body[0]
    has_docstring = isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
    )
    start = first.end_lineno + 1 if has_docstring else first.lineno
    return function.end_lineno - start + 1


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_60_lines_below_its_docstring(package):
    long = []
    for path in _sources(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = _lines_below_docstring(node)
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _imported_modules(path: Path) -> set[str]:
    """The ``experiments.*`` modules ``path`` imports at run time, anywhere in it (those under
    ``if TYPE_CHECKING:``, for annotations only, are left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("experiments.")}


def test_the_experiments_have_no_import_cycle():
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts): path
        for path in _sources("experiments")
        if path.name != "__init__.py"
    }
    graph = {name: _imported_modules(path) & set(modules) for name, path in modules.items()}

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for child in graph[node]:
            if child == start:
                return (*seen, child)
            if child not in seen:
                found = cycle_from(start, child, (*seen, child))
                if found:
                    return found
        return None

    cycles = [cycle for name in graph if (cycle := cycle_from(name, name, (name,)))]
    assert not cycles, f"import cycles: {cycles[:3]}"
