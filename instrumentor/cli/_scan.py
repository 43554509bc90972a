"""The ``ast`` scan behind ``instrumentor lint``: one module at a time, nothing imported or run.

:func:`scan_module` parses one file's source and reports, with lines and columns:

* event names passed as strings (``inline-event-name``) or built at run time
  (``dynamic-event-name``) to instrumentor's ``track()``/``tracks()`` or to another analytics
  SDK's track call, resolved through the module's imports, assignments and module-level
  string constants; and to ``.track(``/``.capture(`` methods of a receiver lint cannot
  resolve or that is the project's own, when the argument is, or is shaped like, an event name;
* ``Events.X`` (any registry of the plan, as imported, aliased or star-imported) where ``X``
  is no member (``unknown-event``), and ``Events[name]``-style lookups by a run-time name
  (``dynamic-event-lookup``);
* imports of analytics SDKs outside the analytics package (``direct-sdk-import``);
* which plan events the module refers to, for ``unused-event`` across the whole scan.

The plan's data lives in :mod:`._index`, the walk over one module's tree in :mod:`._walk`.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Collection

from instrumentor.cli._common import Finding
from instrumentor.cli._index import ModuleScan, PlanIndex, RegistryInfo
from instrumentor.cli._walk import ModuleWalk

__all__ = ["ModuleScan", "PlanIndex", "RegistryInfo", "scan_module"]


def scan_module(
    source: bytes,
    path: str,
    plan: PlanIndex,
    *,
    may_import_sdks: bool = False,
    package_hint: str = "",
    module: str | None = None,
    project_modules: Collection[str] = frozenset(),
) -> ModuleScan:
    """Scan one module's ``source``; ``path`` is what findings show.

    Args:
        source: The file's bytes (an encoding declaration is honoured).
        path: The path findings report, relative to the working directory when possible.
        plan: The plan's registries; empty runs only the rules that need no plan.
        may_import_sdks: The module is part of the analytics package (``direct-sdk-import``
            does not apply).
        package_hint: The hint of ``direct-sdk-import`` findings.
        module: The module's dotted name from the project root (``app.views``, a package's
            ``app.__init__``), when known: relative imports resolve from it, and a plan module
            scanned itself refers to its own registry.
        project_modules: Top-level modules of the project (the plan's are added): they are
            never SDKs, and their ``.track(``/``.capture(`` may be the project's own wrapper.

    Returns:
        The findings and references; a file that does not parse is one ``syntax-error``, one
        too deeply nested for Python's parser one ``unparseable-file``.
    """
    result = ModuleScan()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes and the like are not lint's business
        try:
            if plan.needles.search(source) is None:
                # Nothing here can be a finding, only the syntax can be wrong: compiling says
                # so in about half the time of building the tree (which then tells what).
                compile(source, path, "exec", dont_inherit=True)
                return result
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
        try:
            tree = ast.parse(source, filename=path)
        except (SyntaxError, ValueError) as exc:  # ValueError: null bytes < 3.12
            return _unparsable(result, path, exc)
        except (RecursionError, MemoryError) as exc:  # the parser's stack or Python's
            return _too_deep(path, exc)
    try:
        scan = ModuleWalk(
            tree, source, path, plan, result, module=module, own=frozenset(project_modules)
        )
        scan.bind()
        scan.check_imports(may_import_sdks, package_hint)
        scan.walk()
    except RecursionError as exc:  # ast.unparse of an expression nested thousands deep
        return _too_deep(path, exc)
    return result


def _unparsable(result: ModuleScan, path: str, exc: Exception) -> ModuleScan:
    line = getattr(exc, "lineno", None) or 0
    column = getattr(exc, "offset", None) or 0
    message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    result.findings.append(
        Finding(
            "syntax-error",
            f"cannot parse: {message}",
            path=path,
            line=line,
            column=column,
            hint="fix the syntax (the file was not linted), or exclude it",
        )
    )
    return result


def _too_deep(path: str, exc: Exception) -> ModuleScan:
    result = ModuleScan()
    result.findings.append(
        Finding(
            "unparseable-file",
            f"too deeply nested to parse ({type(exc).__name__}); Python cannot import it either",
            path=path,
            hint="split the nested expression (the file was not linted), or exclude it",
        )
    )
    return result
