"""Fixtures the delivery tests share: a loopback provider and an outbox path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import instrumentor
from tests.fault_server import FaultServer


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A provider on loopback answering 200; what the test configured is shut down after it."""
    with FaultServer(status=200) as running:
        yield running
    instrumentor.shutdown(1.0)


@pytest.fixture
def path(tmp_path: Path) -> str:
    """Where a test's outbox file goes (not created)."""
    return str(tmp_path / "analytics.db")
