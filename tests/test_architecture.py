"""The architecture rules, read from the package's own source: layers, sizes, private reach-ins.

The layers themselves are import-linter contracts (``[tool.importlinter]`` in pyproject.toml,
``lint-imports`` in CI); these tests pin what import-linter does not check.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import grimp
import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "instrumentor"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

#: Reads of ``x._name`` where ``x`` is not ``self``/``cls`` that are documented APIs of the
#: standard library or a dependency, not another object's private state.
DOCUMENTED_UNDERSCORE_APIS = {
    "_value_",  # enum: the member's value (documented in the enum HOWTO)
    "_name_",  # enum: the member's name
    "_fields",  # NamedTuple: its field names
    "_getframe",  # sys._getframe: the caller's frame (documented CPython API)
    "_get_current_object",  # werkzeug LocalProxy: the object behind Flask's request proxy
    "_exit",  # os._exit: leave a forked child without running the parent's atexit hooks
}
#: Deliberate reach-ins, each with the reason it stays.
ALLOWED_REACH_INS = {
    # The OpenTelemetry gate: one global read on the hot path ("is an SDK installed?"); the
    # public get_tracer_provider() reads the environment on every call while none is set.
    ("_otel.py", "otel_trace._TRACER_PROVIDER"),
    # Django logs a response once; the endpoint marks one it logged itself so Django does not
    # log it again. A write, and Django has no public switch for it.
    ("django.py", "response._has_been_logged"),
}


def _sources() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_no_import_cycles() -> None:
    """No two modules of the package import each other, even through others or for types."""
    graph = grimp.build_graph("instrumentor", exclude_type_checking_imports=False)
    modules = sorted(graph.modules)
    cycles = []
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith(module + ".") or module.startswith(imported + "."):
                continue  # a package and its own submodules
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain is not None:
                cycles.append((module, *chain))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_import_contracts_hold() -> None:
    """lint-imports keeps every contract of pyproject.toml (the layers point down)."""
    script = pathlib.Path(sys.executable).parent / "lint-imports"
    if not script.exists():
        pytest.fail(
            f"lint-imports is not installed next to {sys.executable}: pip install -e .[dev]"
        )
    result = subprocess.run(
        [str(script), "--no-cache"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path: pathlib.Path) -> None:
    """No module over 500 lines, no function over 60."""
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} has {len(text.splitlines())} lines"
    long = [
        f"{node.name} ({(node.end_lineno or node.lineno) - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path}: {long}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_object_reads_another_objects_private_attributes(path: pathlib.Path) -> None:
    """``x._name`` only for self/cls, documented underscore APIs, or an allowed reason."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") and node.attr.endswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if node.attr in DOCUMENTED_UNDERSCORE_APIS:
            continue
        if (path.name, ast.unparse(node)) in ALLOWED_REACH_INS:
            continue
        found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not found, found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_function_level_imports_say_why(path: pathlib.Path) -> None:
    """An import of the package inside a function carries a comment saying why it is lazy."""
    lines = path.read_text().splitlines()
    unexplained = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if (
                in_function
                and isinstance(child, ast.ImportFrom)
                and not child.level
                and (child.module or "").split(".")[0] == "instrumentor"
            ):
                window = " ".join(lines[max(child.lineno - 3, 0) : child.lineno])
                if "#" not in window:
                    unexplained.append(f"{path.name}:{child.lineno} {ast.unparse(child)}")
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse("\n".join(lines)), False)
    assert not unexplained, unexplained
