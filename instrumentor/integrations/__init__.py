"""Integrations with frameworks and task queues; each is imported on its own, when used."""

from __future__ import annotations

__all__: list[str] = []
