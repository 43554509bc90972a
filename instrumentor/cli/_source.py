"""Finding the tracking plan: ``--plan module:Registry`` or ``[tool.instrumentor] plan``.

A plan may be split by domain over several registries (``--plan app.billing:Events --plan
app.reports:Events``, or a list in ``pyproject.toml``); together they are one plan. A spec
without ``:Attr`` takes every registry the module defines.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from instrumentor._registry import EventRegistry, GroupHierarchy
from instrumentor.cli._common import EXIT_FINDINGS, CLIError, find_pyproject, tool_config
from instrumentor.exceptions import PlanError

__all__ = ["Plan", "load_plan"]


@dataclass(frozen=True)
class Plan:
    """The registries that make up one tracking plan.

    Attributes:
        registries: The registry classes, in the order they were named.
        sources: The specs they were loaded from, for messages.
    """

    registries: tuple[type[EventRegistry], ...]
    sources: tuple[str, ...]

    @property
    def events(self) -> tuple[EventRegistry, ...]:
        """Every event of the plan, registry by registry, in definition order."""
        return tuple(member for registry in self.registries for member in registry)

    @property
    def hierarchy(self) -> GroupHierarchy:
        """The plan's group hierarchy (all registries of one plan share it)."""
        return self.registries[0].hierarchy

    def __iter__(self) -> Iterator[EventRegistry]:
        return iter(self.events)


def _import(module_name: str, spec: str) -> object:
    # What the application prints while importing goes to stderr: stdout carries the export.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return importlib.import_module(module_name)
    except PlanError as exc:
        raise CLIError(f"the plan in {module_name!r} is invalid: {exc}", EXIT_FINDINGS) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # any import-time failure of the user's code, sys.exit included
        raise CLIError(
            f"cannot import {module_name!r} (from plan {spec!r}): {type(exc).__name__}: {exc}; "
            "run from the project root, or set PYTHONPATH"
        ) from None


def _registries_in(spec: str) -> list[type[EventRegistry]]:
    module_name, _, attr = spec.partition(":")
    if not module_name or spec.count(":") > 1:
        raise CLIError(f"plan {spec!r} is not 'package.module:Registry' or 'package.module'")
    module = _import(module_name, spec)
    if not attr:
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, EventRegistry)
            and obj.__module__ == module_name
            and len(obj) > 0
        ]
        if not found:
            raise CLIError(f"module {module_name!r} defines no EventRegistry with events")
        return found
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not (inspect.isclass(obj) and issubclass(obj, EventRegistry)) or obj is EventRegistry:
        raise CLIError(f"{spec!r} is {type(obj).__name__}, not an EventRegistry subclass")
    if len(obj) == 0:
        raise CLIError(f"{spec!r} defines no events: name the registry that holds the plan")
    return [obj]


def load_plan(specs: Sequence[str] | None = None, *, start: Path | None = None) -> Plan:
    """Import the plan named by ``specs``, else by ``[tool.instrumentor] plan`` in pyproject.toml.

    The working directory and the pyproject's folder are put on ``sys.path`` first, so the
    application's packages import as they do for its tests.

    Raises:
        CLIError: No plan is named, a module does not import, or the plan is invalid.
    """
    pyproject = find_pyproject(start)
    roots = [Path.cwd()] + ([pyproject.parent] if pyproject else [])
    for root in roots:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    if not specs:
        configured = tool_config(pyproject).get("plan")
        if isinstance(configured, str):
            specs = [configured]
        elif isinstance(configured, list) and all(isinstance(s, str) for s in configured):
            specs = configured
        elif configured is not None:
            raise CLIError(f"{pyproject}: [tool.instrumentor] plan must be a string or a list")
    if not specs:
        raise CLIError(
            "no tracking plan named: pass --plan package.module:Events, or add "
            '[tool.instrumentor] plan = "package.module:Events" to pyproject.toml'
        )
    registries: list[type[EventRegistry]] = []
    for spec in specs:
        for registry in _registries_in(spec.strip()):
            if registry not in registries:
                registries.append(registry)
    hierarchies = {r.hierarchy for r in registries}
    if len(hierarchies) > 1:
        described = "; ".join(
            f"{r.__qualname__}: {' > '.join(r.hierarchy.levels)}" for r in registries
        )
        raise CLIError(
            f"the registries of one plan must share one group hierarchy, got {described}",
            EXIT_FINDINGS,
        )
    return Plan(tuple(registries), tuple(specs))
