"""Names a package imports on first use (PEP 562), where importing them up front costs much.

:func:`lazy_names` gives a package the ``__getattr__`` and ``__dir__`` that load each listed name
from its module when it is first read, then keep it as a plain attribute of the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, modules: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for the names of ``modules``.

    Args:
        package: The package's ``__name__`` (it must be importing, or imported, already).
        modules: Each lazily loaded name, and the module it is imported from.
    """
    namespace = sys.modules[package].__dict__

    def load(name: str) -> Any:
        """A name loaded on first use, from its module (then a plain attribute)."""
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def names() -> list[str]:
        """The package's names, those loaded on first use included."""
        return sorted(set(namespace) | set(modules))

    return load, names
