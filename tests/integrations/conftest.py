"""Fixtures of the integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from instrumentor.testing import CapturedEvents, capture_events

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.django_project.settings")


@pytest.fixture
def captured() -> Iterator[CapturedEvents]:
    """What the test tracks, not strict: the endpoint's refusals are counted, not raised."""
    with capture_events(strict=False) as events:
        yield events
