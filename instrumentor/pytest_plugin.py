"""The pytest plugin (registered through the ``pytest11`` entry point as ``instrumentor``).

Request the ``tracked`` fixture to swap every transport for memory and turn strict mode on::

    def test_report(tracked):
        create_report(data)
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_1")

Options go through a marker: ``@pytest.mark.instrumentor(strict=False, instance_level=True)``
(any :func:`~instrumentor.configure` keyword).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from instrumentor.context import _current
from instrumentor.testing import CapturedEvents, capture_events

__all__ = ["tracked"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``instrumentor`` marker."""
    config.addinivalue_line(
        "markers",
        "instrumentor(**settings): configure() keywords for the `tracked` fixture, "
        "e.g. strict=False or instance_level=True",
    )


@pytest.fixture
def tracked(request: pytest.FixtureRequest) -> Iterator[CapturedEvents]:
    """Capture what the test tracks, in memory and in strict mode.

    Configuration and the bound context are restored afterwards, so nothing a test binds
    leaks into the next one.
    """
    marker = request.node.get_closest_marker("instrumentor")
    settings = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        raise pytest.UsageError("@pytest.mark.instrumentor takes keywords only, e.g. strict=False")
    token = _current.set(_current.get())  # whatever the test binds is undone afterwards
    try:
        with capture_events(**settings) as captured:
            yield captured
    finally:
        _current.reset(token)
