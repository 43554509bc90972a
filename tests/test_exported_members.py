"""The public API: exactly the pinned surface, sorted, resolvable and documented."""

from __future__ import annotations
import __future__

import importlib
import inspect
import pathlib
import pkgutil
import types

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
        for name, value in vars(instrumentor).items()
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


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES - {"instrumentor"}))
def test_the_api_page_lists_every_public_name(module_name: str) -> None:
    """docs/api.md names every public module and every name it exports."""
    page = (pathlib.Path(__file__).parents[1] / "docs" / "api.md").read_text()
    module = importlib.import_module(module_name)
    assert f"`{module_name}`" in page, f"{module_name} is not on the API page"
    for name in module.__all__:
        assert f"{module_name}.{name}`" in page or f"`{name}`" in page, (
            f"{module_name}.{name} is not on the API page"
        )


def test_the_api_page_lists_the_top_level() -> None:
    """docs/api.md names every top-level name."""
    page = (pathlib.Path(__file__).parents[1] / "docs" / "api.md").read_text()
    for name in TOP_LEVEL - {"__version__"}:
        assert f"`{name}`" in page, f"instrumentor.{name} is not on the API page"
