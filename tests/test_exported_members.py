"""The public API: exactly the pinned surface, sorted, resolvable and documented."""

from __future__ import annotations
import __future__

import importlib
import inspect
import pathlib
import pkgutil
import re
import types
from collections.abc import Sequence

import pytest

import instrumentor

#: What ``from instrumentor import *`` gives: the names an application types daily.
TOP_LEVEL = {
    "AnalyticsContext",
    "Call",
    "ConfigurationError",
    "ContextToken",
    "EventRegistry",
    "Group",
    "Incident",
    "IncidentKind",
    "InstrumentorError",
    "MissingContextError",
    "Secret",
    "Settings",
    "TrackingUsageError",
    "__version__",
    "aflush",
    "bind_context",
    "bound_context",
    "clear_context",
    "configure",
    "configured",
    "current_context",
    "current_settings",
    "establish_group_hierarchy",
    "event",
    "flush",
    "group",
    "identify",
    "reset_configuration",
    "reset_context",
    "reset_stats",
    "shutdown",
    "stats",
    "track",
    "tracks",
    "with_current_context",
}

#: Every public module (no ``_`` in its dotted path); the rest is implementation.
PUBLIC_MODULES = {
    "instrumentor",
    "instrumentor.celery",
    "instrumentor.cli",
    "instrumentor.delivery",
    "instrumentor.exceptions",
    "instrumentor.integrations",
    "instrumentor.integrations.asgi",
    "instrumentor.integrations.django",
    "instrumentor.integrations.flask",
    "instrumentor.plan",
    "instrumentor.pytest_plugin",
    "instrumentor.signals",
    "instrumentor.testing",
    "instrumentor.transports",
}

API_PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"
#: A row of an API page table: ``| `name` | signature | description |``.
_API_ROW = re.compile(r"^\| `([^`]+)` \|(.*)$", re.MULTILINE)
#: A cell boundary: a ``|`` not escaped as ``\|`` (signatures such as ``str \| None``).
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


def _all_modules() -> set[str]:
    root = pathlib.Path(instrumentor.__file__).parent
    names = {"instrumentor"}
    for info in pkgutil.walk_packages([str(root)], prefix="instrumentor."):
        names.add(info.name)
    return names


def test_top_level_is_exactly_the_daily_surface() -> None:
    """The top-level __all__ is the pinned set, and every public name there is in it."""
    public = {
        name
        for name, value in ((name, getattr(instrumentor, name)) for name in dir(instrumentor))
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, __future__._Feature)
    } | {"__version__"}
    assert set(instrumentor.__all__) == TOP_LEVEL
    assert public == TOP_LEVEL
    assert len(TOP_LEVEL) <= 35


def test_every_other_module_is_private() -> None:
    """Modules outside the pinned public set carry a leading underscore in their path."""
    public = {
        name for name in _all_modules() if not any(p.startswith("_") for p in name.split("."))
    }
    assert public == PUBLIC_MODULES


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_all_is_sorted_and_resolvable(module_name: str) -> None:
    """__all__ is sorted (case-sensitive, like isort) and every name exists."""
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert names == sorted(names), f"{module_name}.__all__ is not sorted"
    for name in names:
        assert hasattr(module, name), f"{module_name}.{name} is missing"


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_public_objects_are_documented(module_name: str) -> None:
    """Every public class, function and module has a docstring."""
    module = importlib.import_module(module_name)
    assert module.__doc__, module_name
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, types.GenericAlias):
            continue  # a type alias such as ContextToken (3.10 reports these as classes)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{module_name}.{name} has no docstring"


def _api_sections(page: str) -> dict[str, list[tuple[str, list[str]]]]:
    """The module sections of the API page: module -> its table rows, as (name, other cells).

    A section runs from its ``## `module` `` heading to the next ``## `` heading; a row is a
    table line whose first cell is one name in backticks (``| `flush` | signature | what |``).
    """
    headings = list(re.finditer(r"^## (.+)$", page, re.MULTILINE))
    sections: dict[str, list[tuple[str, list[str]]]] = {}
    for index, heading in enumerate(headings):
        module = re.fullmatch(r"`(instrumentor(?:\.\w+)*)`", heading.group(1).strip())
        if module is None:
            continue
        end = headings[index + 1].start() if index + 1 < len(headings) else len(page)
        sections[module.group(1)] = [
            (row.group(1), _CELL_SEPARATOR.split(row.group(2))[:-1])
            for row in _API_ROW.finditer(page, heading.end(), end)
        ]
    return sections


def _api_page_gaps(page: str, module_name: str, exported: Sequence[str]) -> list[str]:
    """What the page's section for ``module_name`` gets wrong about ``exported`` (its __all__)."""
    rows = _api_sections(page).get(module_name)
    if rows is None:
        return [f"no section for {module_name}"]
    names = [name for name, _ in rows]
    gaps = [f"{module_name}.{name} is not listed" for name in exported if name not in names]
    gaps += [
        f"{module_name}.{name} is listed, not exported" for name in names if name not in exported
    ]
    gaps += [
        f"{module_name}.{name} is listed twice" for name in set(names) if names.count(name) > 1
    ]
    gaps += [
        f"{module_name}.{name} needs a signature and a description"
        for name, cells in rows
        if len(cells) != 2 or not all(cell.strip() for cell in cells)
    ]
    return gaps


def test_the_api_page_has_one_section_per_public_module() -> None:
    """docs/api.md has a section for every public module, and for no other module."""
    assert set(_api_sections(API_PAGE.read_text(encoding="utf-8"))) == PUBLIC_MODULES


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_the_api_page_lists_exactly_each_modules_all(module_name: str) -> None:
    """Each module's section of docs/api.md has one row per name of its __all__, and no other.

    The expected names are read from ``__all__`` when the test runs, so a name added to a module
    (such as a new ``instrumentor.delivery`` strategy) fails here until the page documents it.
    """
    module = importlib.import_module(module_name)
    gaps = _api_page_gaps(API_PAGE.read_text(encoding="utf-8"), module_name, module.__all__)
    assert not gaps, "docs/api.md: " + "; ".join(gaps)


def test_the_api_page_check_catches_missing_extra_and_empty_rows() -> None:
    """A name without a row, a row for a name not exported and a row without cells are reported."""
    page = (
        "## `instrumentor.demo`\n\n| Name | Signature | Description |\n|---|---|---|\n"
        "| `flush` | `flush(timeout=5.0)` | Deliver what is queued. |\n"
        "| `purge` | `purge(path)` | Delete the outbox. |\n"
        "| `drain` | `drain(path) -> int \\| None` | |\n"
        "## Elsewhere\n| `shutdown` | `shutdown()` | Not in the module's section. |\n"
    )
    assert _api_page_gaps(page, "instrumentor.demo", ["drain", "flush", "shutdown"]) == [
        "instrumentor.demo.shutdown is not listed",
        "instrumentor.demo.purge is listed, not exported",
        "instrumentor.demo.drain needs a signature and a description",
    ]
    assert _api_page_gaps(page, "instrumentor.other", []) == ["no section for instrumentor.other"]


def test_the_api_page_names_no_private_module() -> None:
    """docs/api.md never points readers at an implementation module (a ``_`` path part)."""
    page = API_PAGE.read_text(encoding="utf-8")
    assert not re.findall(r"instrumentor(?:\.\w+)*\._\w+", page)
