"""The pytest plugin (registered through the ``pytest11`` entry point as ``instrumentor``).

Request the ``tracked`` fixture to swap every transport for memory and turn strict mode on::

    def test_report(tracked):
        create_report(data)
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_1")

Options go through a marker: ``@pytest.mark.instrumentor(strict=False, instance_level=True)``
(any :func:`~instrumentor.configure` keyword).

``pytest --instrumentor-coverage`` reports which events of the plan the suite tracked, and
``--instrumentor-coverage-fail-under=90`` fails the run below 90%.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from instrumentor._context import context_var
from instrumentor.testing import CapturedEvents, capture_events

__all__ = ["tracked"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the plan-coverage options."""
    group = parser.getgroup("instrumentor", "instrumentor tracking plan")
    group.addoption(
        "--instrumentor-coverage",
        action="store_true",
        default=False,
        help="report which events of the tracking plan the tests tracked",
    )
    group.addoption(
        "--instrumentor-coverage-fail-under",
        type=float,
        default=None,
        metavar="PCT",
        help="fail the run when less than PCT percent of the plan's events were tracked",
    )
    group.addoption(
        "--instrumentor-plan",
        action="append",
        default=None,
        metavar="MODULE[:REGISTRY]",
        help="the plan for coverage (default: [tool.instrumentor] plan, else every registry)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``instrumentor`` marker, and plan coverage when asked for."""
    config.addinivalue_line(
        "markers",
        "instrumentor(**settings): configure() keywords for the `tracked` fixture, "
        "e.g. strict=False or instance_level=True",
    )
    wanted = config.getoption("instrumentor_coverage", False) or (
        config.getoption("instrumentor_coverage_fail_under", None) is not None
    )
    if wanted:
        # Lazy on purpose: coverage is opt-in, and it loads the CLI's plan loader; a plain
        # pytest run of every project that installs instrumentor skips both (~6 ms).
        from instrumentor._coverage import PlanCoverage

        config.pluginmanager.register(PlanCoverage(config), "instrumentor-coverage")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Disconnect the coverage recorder."""
    plugin = config.pluginmanager.get_plugin("instrumentor-coverage")
    if plugin is not None:
        plugin.close()


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
    token = context_var.set(context_var.get())  # whatever the test binds is undone afterwards
    try:
        with capture_events(**settings) as captured:
            yield captured
    finally:
        context_var.reset(token)
