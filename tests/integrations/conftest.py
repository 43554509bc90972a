"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from instrumentor.testing import CapturedEvents, capture_events


@pytest.fixture
def captured() -> Iterator[CapturedEvents]:
    """What the test tracks, not strict: the endpoint's refusals are counted, not raised."""
    with capture_events(strict=False) as events:
        yield events
