"""Every test starts unconfigured, with no context bound and no incidents counted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import instrumentor
from instrumentor.diagnostics import _diagnostics


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "ANALYTICS_API_KEY",
        "ANALYTICS_DEBUG",
        "ANALYTICS_INSTANCE_LEVEL",
        "ANALYTICS_STRICT",
        "ANALYTICS_ENABLED",
        "ANALYTICS_BUNDLE_TTL",
        "ANALYTICS_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    instrumentor.reset_configuration()
    instrumentor.clear_context()
    _diagnostics.reset()
    yield
    instrumentor.reset_configuration()
    instrumentor.clear_context()
    _diagnostics.reset()
