"""``plan lock`` / ``plan diff`` (being written)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register"]


def register(sub: Any, add_plan_option: Callable[[Any], None]) -> None:
    """Add ``plan lock`` and ``plan diff``."""
