"""The public API: __all__ is complete, sorted, and every public object is documented."""

from __future__ import annotations
import __future__

import importlib
import inspect
import types

import pytest

import instrumentor

MODULES = [
    "instrumentor",
    "instrumentor.celery",
    "instrumentor.config",
    "instrumentor.context",
    "instrumentor.decorators",
    "instrumentor.delivery",
    "instrumentor.delivery.celery",
    "instrumentor.delivery.celery_task",
    "instrumentor.delivery.destination",
    "instrumentor.delivery.outbox",
    "instrumentor.delivery.outbox_admin",
    "instrumentor.delivery.outbox_destination",
    "instrumentor.delivery.queue",
    "instrumentor.delivery.attempt",
    "instrumentor.delivery.retry",
    "instrumentor.delivery.telemetry",
    "instrumentor.diagnostics",
    "instrumentor.emitter",
    "instrumentor.exceptions",
    "instrumentor.integrations",
    "instrumentor.integrations.asgi",
    "instrumentor.integrations.django",
    "instrumentor.integrations.flask",
    "instrumentor.integrations.celery",
    "instrumentor.messages",
    "instrumentor.naming",
    "instrumentor.registry",
    "instrumentor.signals",
    "instrumentor.testing",
    "instrumentor.transports",
    "instrumentor.transports.accoil",
    "instrumentor.transports.http",
    "instrumentor.transports.segment",
    "instrumentor.transports.console",
    "instrumentor.transports.memory",
]


def test_package_exports_every_public_name() -> None:
    """Every public name defined in the package namespace is in __all__, and vice versa."""
    public = {
        name
        for name, value in vars(instrumentor).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, __future__._Feature)
    } | {"__version__"}
    assert set(instrumentor.__all__) == public


@pytest.mark.parametrize("module_name", MODULES)
def test_all_is_sorted_and_resolvable(module_name: str) -> None:
    """__all__ is sorted (case-sensitive, like isort) and every name exists."""
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert names == sorted(names), f"{module_name}.__all__ is not sorted"
    for name in names:
        assert hasattr(module, name), f"{module_name}.{name} is missing"


@pytest.mark.parametrize("module_name", MODULES)
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
