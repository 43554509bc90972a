"""Plan export formats (being written)."""

from __future__ import annotations

from typing import Any

__all__ = ["FORMATS", "render"]

FORMATS = ("md", "json", "csv", "yaml", "jsonschema", "ts")


def render(document: dict[str, Any], fmt: str) -> str:
    """Render the plan document in ``fmt``."""
    raise NotImplementedError(fmt)
