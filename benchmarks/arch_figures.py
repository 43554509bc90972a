"""Architecture figures read from the package's own imports and syntax trees.

Prints, for ``instrumentor/``: the largest import cycle (strongly connected modules), imports
that point up the layers declared in ``pyproject.toml`` (``[tool.importlinter]``), imports inside
functions, reads of another object's private attributes (``x._name`` where ``x`` is not
``self``/``cls``, a module's own name or a dunder), the public names (top-level ``__all__``) and
public modules, and the largest module and function. Stdlib and grimp only; always exits 0.

    python benchmarks/arch_figures.py [PACKAGE_DIR]
"""

from __future__ import annotations

import ast
import pathlib
import sys
from collections import defaultdict

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "instrumentor")
#: Documented underscore APIs of the standard library and dependencies (not private state).
DOCUMENTED = {"_value_", "_name_", "_fields", "_getframe", "_get_current_object", "_exit"}
PKG = ROOT.name


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(
    mod: str, node: ast.Import | ast.ImportFrom, is_pkg: bool, known: set[str]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = mod.split(".")
        if not is_pkg:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    # ``from pkg import submodule`` imports the submodule (the package's __init__ runs for any
    # import below it anyway, so it is not an edge of its own).
    subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in known]
    if subs and len(subs) == len(node.names):
        return subs
    return [name, *subs]


def main() -> None:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = defaultdict(set)
    typed_graph: dict[str, set[str]] = defaultdict(set)  # TYPE_CHECKING imports too
    function_level: list[str] = []
    type_checking = 0
    reach_ins = 0
    documented = 0
    sizes: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for mod, path in sorted(files.items()):
        text = path.read_text()
        tree = ast.parse(text)
        sizes.append((len(text.splitlines()), str(path)))
        is_pkg = path.name == "__init__.py"

        def visit(
            node: ast.AST,
            in_func: bool,
            in_tc: bool,
            mod: str = mod,
            is_pkg: bool = is_pkg,
            path: pathlib.Path = path,
        ) -> None:
            nonlocal type_checking, reach_ins, documented
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    targets = [
                        t for t in imported(mod, child, is_pkg, known) if t.split(".")[0] == PKG
                    ]
                    for target in targets:
                        if target in known and target != mod:
                            typed_graph[mod].add(target)
                    if targets and in_tc:
                        type_checking += 1
                    elif targets:
                        for target in targets:
                            if target in known and target != mod:
                                graph[mod].add(target)
                        if in_func:
                            function_level.append(f"{path}:{child.lineno}")
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    end = child.end_lineno or child.lineno
                    functions.append(
                        (end - child.lineno + 1, f"{path}:{child.lineno} {child.name}")
                    )
                if (
                    isinstance(child, ast.Attribute)
                    and child.attr.startswith("_")
                    and not (child.attr.startswith("__") and child.attr.endswith("__"))
                ):
                    owner = child.value
                    own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                    if not own and child.attr in DOCUMENTED:
                        documented += 1
                    elif not own:
                        reach_ins += 1
                func = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                tc = in_tc or (
                    isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
                )
                visit(child, func, tc)

        visit(tree, False, False)

    def largest_cycle(edges: dict[str, set[str]]) -> tuple[int, list[str]]:
        """(number of cycles, the largest): strongly connected groups of more than one module."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on: set[str] = set()
        comps: list[list[str]] = []
        counter = [0]

        def strong(v: str) -> None:
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in edges.get(v, ()):
                if w not in index:
                    strong(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(comp)

        for v in sorted(known):
            if v not in index:
                strong(v)
        cycles = [c for c in comps if len(c) > 1]
        largest: list[str] = max(cycles, key=lambda c: len(c), default=[])
        return len(cycles), sorted(largest)

    sys.setrecursionlimit(10_000)
    n_cycles, largest = largest_cycle(graph)
    n_typed, largest_typed = largest_cycle(typed_graph)

    init = ast.parse((ROOT / "__init__.py").read_text())
    public: list[str] = []
    for node in init.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            public = list(ast.literal_eval(node.value))
    public_modules = sorted(
        m for m in known if not any(part.startswith("_") for part in m.split(".")[1:])
    )
    sizes.sort(reverse=True)
    functions.sort(reverse=True)
    print(f"modules: {len(known)}")
    print(f"import cycles at run time (strongly connected groups of >1 module): {n_cycles}")
    print(f"largest: {len(largest)} modules {largest}")
    print(f"import cycles counting TYPE_CHECKING imports: {n_typed}")
    print(f"largest: {len(largest_typed)} modules {largest_typed}")
    print(f"function-level imports of {PKG}: {len(function_level)}")
    print(f"imports under TYPE_CHECKING: {type_checking}")
    print(f"reach-ins (x._private, x not self/cls): {reach_ins}")
    print(f"  (not counted: {documented} uses of documented underscore APIs such as Enum._value_)")
    print(f"top-level __all__: {len(public)} names")
    print(f"public modules (no _ in the dotted path): {len(public_modules)}")
    print(f"modules over 500 lines: {sum(1 for n, _ in sizes if n > 500)}; largest {sizes[0]}")
    print(
        f"functions over 60 lines: {sum(1 for n, _ in functions if n > 60)}; largest {functions[0]}"
    )
    for n, where in functions:
        if n > 60:
            print(f"  {n:4d} {where}")


if __name__ == "__main__":
    main()
