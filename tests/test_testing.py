"""The test helpers and the pytest plugin, exercised through a real pytest run (pytester)."""

from __future__ import annotations

import pytest

from instrumentor import bind_context, track
from instrumentor.testing import capture_events
from tests.plan import Events


class TestCaptureEvents:
    def test_needs_no_pytest_and_restores(self) -> None:
        """capture_events() is a plain context manager that restores the configuration."""
        bind_context(user_id="u_1", account_id="acc_1")
        with capture_events() as tracked:
            track(Events.PLAN_UPGRADED)
        track(Events.PLAN_UPGRADED)  # unconfigured again: not captured
        assert tracked.event_names == ["Plan_Upgraded"]

    def test_failure_lists_everything_captured(self) -> None:
        """A failed assertion shows every captured message, so the cause is visible at once."""
        bind_context(user_id="u_1", account_id="acc_1", project_id="proj_1")
        with capture_events() as tracked:
            track(Events.REPORT_CREATED)
            with pytest.raises(AssertionError) as info:
                tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_2")
        message = str(info.value)
        assert "Expected Report_Created with group_id='proj_2' to be tracked." in message
        assert "track Report_Created user='u_1' group='proj_1' (project)" in message
        assert "Captured 4 message(s)" in message

    def test_times_and_negative_assertions(self) -> None:
        """times=, assert_not_tracked and assert_nothing_tracked fail when they should."""
        bind_context(user_id="u_1", account_id="acc_1")
        with capture_events() as tracked:
            tracked.assert_nothing_tracked()
            track(Events.PLAN_UPGRADED)
            track(Events.PLAN_UPGRADED)
            tracked.assert_tracked(Events.PLAN_UPGRADED, times=2)
            with pytest.raises(AssertionError, match=r"1 time.*found 2"):
                tracked.assert_tracked(Events.PLAN_UPGRADED, times=1)
            with pytest.raises(AssertionError):
                tracked.assert_not_tracked(Events.PLAN_UPGRADED)
            with pytest.raises(AssertionError):
                tracked.assert_nothing_tracked()
            tracked.assert_not_tracked(Events.SEARCH_PERFORMED)

    def test_identify_and_group_assertions(self) -> None:
        """assert_identified and assert_grouped check traits, level and parent."""
        bind_context(user_id="u_1", user_traits={"role": "admin"}, account_id="a", workspace_id="w")
        with capture_events() as tracked:
            track(Events.WORKSPACE_SETTINGS_UPDATED)
            tracked.assert_identified("u_1", traits={"role": "admin"})
            tracked.assert_grouped("w", group_type="workspace", parent_group_id="a")
            with pytest.raises(AssertionError):
                tracked.assert_grouped("w", parent_group_id="other")
            with pytest.raises(AssertionError):
                tracked.assert_identified("u_1", traits={"role": "viewer"})

    def test_incidents_are_listed_in_failures(self) -> None:
        """Lenient captures keep incidents and show them in failure messages."""
        bind_context(user_id="u_1")
        with capture_events(strict=False) as tracked:
            track(Events.REPORT_CREATED)
            with pytest.raises(AssertionError, match="missing_group"):
                tracked.assert_tracked(Events.REPORT_CREATED, group_id="p")


PLUGIN_TEST = """
import pytest
from instrumentor import EventRegistry, event, tracks, bind_context, MissingContextError

class PluginEvents(EventRegistry):
    WIDGET_BUILT = event("Widget_Built", category="core_value", group_level="project")

@tracks(PluginEvents.WIDGET_BUILT)
def build():
    return "widget"

def test_fixture_captures(tracked):
    bind_context(user_id="u", account_id="a", project_id="p")
    assert build() == "widget"
    tracked.assert_tracked(PluginEvents.WIDGET_BUILT, group_id="p")

def test_fixture_is_strict(tracked):
    bind_context(user_id="u", account_id="a")
    with pytest.raises(MissingContextError):
        build()

@pytest.mark.instrumentor(strict=False, instance_level=True)
def test_marker_options(tracked):
    bind_context(account_id="acc")
    build()
    tracked.assert_tracked(PluginEvents.WIDGET_BUILT, user_id="acc", group_id=None)

def test_failure_output(tracked):
    bind_context(user_id="u", account_id="a", project_id="p")
    build()
    tracked.assert_tracked(PluginEvents.WIDGET_BUILT, group_id="nope")
"""


def test_plugin_through_a_real_pytest_run(pytester: pytest.Pytester) -> None:
    """The pytest11 entry point provides `tracked` and the marker; failures list captures."""
    pytester.makepyfile(test_plugin_usage=PLUGIN_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Expected Widget_Built with group_id='nope' to be tracked.*",
            "*track Widget_Built user='u' group='p' (project)*",
        ]
    )


def test_marker_rejects_positional_arguments(pytester: pytest.Pytester) -> None:
    """@pytest.mark.instrumentor takes keywords only."""
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.instrumentor(True)
        def test_x(tracked):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*keywords only*"])
    assert result.ret != 0


class TestCaptureOptions:
    def test_accepts_configure_keywords(self) -> None:
        """debug= and enabled= pass through; the capture still receives everything."""
        bind_context(user_id="u_1", account_id="acc_1")
        with capture_events(debug=True, bundle_ttl=0) as tracked:
            track(Events.PLAN_UPGRADED)
            track(Events.PLAN_UPGRADED)
        assert [m.type for m in tracked.messages] == ["identify", "group", "track"] * 2

    def test_rejects_transports(self) -> None:
        """The capture is the transport; the error says how to observe more."""
        with pytest.raises(TypeError, match="event_emitted"), capture_events(transports=[]):
            pass

    def test_user_on_error_hook_is_chained(self) -> None:
        """A given on_error hook sees incidents as well as the capture."""
        seen: list[str] = []
        bind_context(user_id="u_1")
        with capture_events(strict=False, on_error=lambda i: seen.append(i.kind)) as tracked:
            track(Events.REPORT_CREATED)
        assert seen == ["missing_group"]
        assert [i.kind for i in tracked.incidents] == ["missing_group"]
