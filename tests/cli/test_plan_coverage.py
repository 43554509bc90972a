"""``pytest --instrumentor-coverage``: which events of the plan a test suite tracked."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

PLAN = """
from instrumentor import EventRegistry, event


class Events(EventRegistry):
    REPORT_CREATED = event("Report_Created", category="core_value", description="d")
    REPORT_DELETED = event("Report_Deleted", category="core_value", description="d")
    SEARCH_PERFORMED = event("Search_Performed", category="feature_usage", description="d")
    PLAN_UPGRADED = event("Plan_Upgraded", category="billing", description="d")
"""

TESTS = """
import instrumentor
import instrumentor.transports
from instrumentor import bound_context, tracks

from app_events import Events


@tracks(Events.REPORT_CREATED)
def create_report() -> None: ...


def test_with_the_fixture(tracked):
    with bound_context(user_id="u1", account_id="a1"):
        create_report()
    tracked.assert_tracked(Events.REPORT_CREATED)


def test_with_own_transport():
    memory = instrumentor.transports.MemoryTransport()
    with instrumentor.configured(transports=(memory,)):
        with bound_context(user_id="u1", account_id="a1"):
            Events.SEARCH_PERFORMED.track()


def test_not_tracking():
    assert True
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(app_events=PLAN, test_suite=TESTS)
    return pytester


def test_reports_tracked_and_missing_events(suite: pytest.Pytester) -> None:
    """--instrumentor-coverage reports the share tracked and lists each untracked event."""
    result = suite.runpytest_subprocess("--instrumentor-coverage", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*instrumentor plan coverage*",
            "2/4 events of the plan tracked (50.0%)",
            "  not tracked: Plan_Upgraded (Events.PLAN_UPGRADED)",
            "  not tracked: Report_Deleted (Events.REPORT_DELETED)",
        ]
    )


def test_fails_under_the_threshold(suite: pytest.Pytester) -> None:
    """Coverage under --instrumentor-coverage-fail-under fails the run with a message."""
    result = suite.runpytest_subprocess("--instrumentor-coverage-fail-under=75")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAIL: plan coverage 50.0% is under the required 75%"])


def test_passes_at_the_threshold(suite: pytest.Pytester) -> None:
    """Coverage exactly at the threshold passes and says so."""
    result = suite.runpytest_subprocess("--instrumentor-coverage-fail-under=50")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["required 50% reached"])


def test_plan_named_in_pyproject(suite: pytest.Pytester) -> None:
    """The plan named in pyproject.toml is the one measured, not other imported registries."""
    suite.makepyfile(
        other_events="""
        from instrumentor import EventRegistry, event

        class Other(EventRegistry):
            FILE_UPLOADED = event("File_Uploaded", category="core_value", description="d")
        """
    )
    suite.makeconftest("import other_events  # noqa: F401  (imported, but not the plan)")
    suite.makepyprojecttoml('[tool.instrumentor]\nplan = "app_events:Events"\n')
    result = suite.runpytest_subprocess("--instrumentor-coverage")
    result.stdout.fnmatch_lines(["2/4 events of the plan tracked (50.0%)"])
    assert "File_Uploaded" not in result.stdout.str()


def test_an_unloadable_plan_fails_the_threshold(suite: pytest.Pytester) -> None:
    """A plan that cannot be loaded fails a run that asks for a threshold."""
    result = suite.runpytest_subprocess(
        "--instrumentor-coverage-fail-under=10", "--instrumentor-plan", "nowhere:Events"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["could not load the plan: cannot import 'nowhere'*"])


def test_workers_report_to_the_controller(suite: pytest.Pytester) -> None:
    """Under xdist the workers' tracked events are combined in one report."""
    result = suite.runpytest_subprocess("-n", "2", "--instrumentor-coverage")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["2/4 events of the plan tracked (50.0%)"])


def test_off_by_default(suite: pytest.Pytester) -> None:
    """Without the option no coverage report is printed."""
    result = suite.runpytest_subprocess()
    result.assert_outcomes(passed=3)
    assert "plan coverage" not in result.stdout.str()
