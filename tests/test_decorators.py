"""@tracks: after success only, sync and async, methods, group ids from the call."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from instrumentor import (
    Call,
    MissingContextError,
    TrackingUsageError,
    bind_context,
    clear_context,
    stats,
    tracks,
)
from instrumentor.exceptions import UnknownGroupLevelError
from instrumentor.testing import CapturedEvents, capture_events
from tests.plan import Events


@pytest.fixture
def bound() -> None:
    """A full identity for the default hierarchy."""
    bind_context(user_id="u_1", account_id="acc_1", workspace_id="ws_1", project_id="proj_1")


pytestmark = pytest.mark.usefixtures("bound")


@tracks(Events.REPORT_CREATED)
def create_report(title: str, *, fail: bool = False) -> dict[str, str]:
    """Create a report (a stand-in for business code)."""
    if fail:
        raise ValueError("database down")
    return {"title": title}


@tracks(Events.REPORT_CREATED)
async def create_report_async(title: str, *, fail: bool = False) -> str:
    """An async stand-in."""
    await asyncio.sleep(0)
    if fail:
        raise ValueError("database down")
    return title


class TestAfterSuccessOnly:
    def test_emits_after_return_and_keeps_the_result(self, tracked: CapturedEvents) -> None:
        """A normal return emits once and the return value is the very same object."""
        result = create_report("Q3")
        assert result == {"title": "Q3"}
        tracked.assert_tracked(Events.REPORT_CREATED, times=1, group_id="proj_1")

    def test_exception_propagates_untouched_and_emits_nothing(
        self, tracked: CapturedEvents
    ) -> None:
        """An exception means no event; the same exception object reaches the caller."""
        with pytest.raises(ValueError, match="database down") as info:
            create_report("Q3", fail=True)
        assert info.value.__traceback__ is not None
        tracked.assert_nothing_tracked()

    def test_event_is_emitted_after_the_body_ran(self, tracked: CapturedEvents) -> None:
        """During the body nothing has been tracked yet."""
        seen_inside: list[int] = []

        @tracks(Events.PLAN_UPGRADED)
        def upgrade() -> None:
            seen_inside.append(len(tracked.tracks))

        upgrade()
        assert seen_inside == [0]
        assert len(tracked.tracks) == 1

    def test_base_exceptions_propagate(self, tracked: CapturedEvents) -> None:
        """KeyboardInterrupt-like exceptions pass through with no event."""

        @tracks(Events.PLAN_UPGRADED)
        def interrupted() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            interrupted()
        tracked.assert_nothing_tracked()


class TestAsync:
    def test_emits_after_the_await_completes(self, tracked: CapturedEvents) -> None:
        """Calling the coroutine function emits nothing; awaiting it to completion does."""
        coro = create_report_async("Q3")
        tracked.assert_nothing_tracked()
        assert asyncio.run(coro) == "Q3"
        tracked.assert_tracked(Events.REPORT_CREATED, times=1)

    def test_exception_in_coroutine_emits_nothing(self, tracked: CapturedEvents) -> None:
        """A raising coroutine propagates its exception and emits nothing."""
        with pytest.raises(ValueError, match="database down"):
            asyncio.run(create_report_async("Q3", fail=True))
        tracked.assert_nothing_tracked()

    def test_cancellation_emits_nothing(self, tracked: CapturedEvents) -> None:
        """A cancelled coroutine raises CancelledError to its awaiter and emits nothing."""

        @tracks(Events.REPORT_CREATED)
        async def slow() -> None:
            await asyncio.sleep(10)

        async def main() -> None:
            task = asyncio.create_task(slow())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        tracked.assert_nothing_tracked()

    def test_coroutine_function_stays_one(self) -> None:
        """inspect sees a coroutine function, with the original signature and name."""
        assert inspect.iscoroutinefunction(create_report_async)
        assert not inspect.iscoroutinefunction(create_report)
        assert create_report_async.__name__ == "create_report_async"
        assert str(inspect.signature(create_report)) == (
            "(title: 'str', *, fail: 'bool' = False) -> 'dict[str, str]'"
        )
        assert create_report.__doc__ == "Create a report (a stand-in for business code)."

    def test_sync_function_returning_a_coroutine_emits_after_its_await(
        self, tracked: CapturedEvents
    ) -> None:
        """A function that hides its async nature is still tracked after completion."""

        async def body() -> str:
            await asyncio.sleep(0)
            return "done"

        @tracks(Events.PLAN_UPGRADED)
        def hidden() -> Any:
            return body()

        coro = hidden()
        tracked.assert_nothing_tracked()
        assert asyncio.run(coro) == "done"
        tracked.assert_tracked(Events.PLAN_UPGRADED, times=1)

    def test_tasks_keep_their_own_context(self, tracked: CapturedEvents) -> None:
        """Concurrent tasks binding different users track with their own user."""

        async def handle(user: str) -> None:
            bind_context(user_id=user)
            await asyncio.sleep(0)
            await create_report_async(user)

        async def main() -> None:
            await asyncio.gather(*(handle(f"u_{i}") for i in range(20)))

        asyncio.run(main())
        assert sorted(m.user_id for m in tracked.tracks) == sorted(f"u_{i}" for i in range(20))


class Reports:
    """Methods of every kind."""

    def __init__(self, project_id: str) -> None:
        self.project_id = project_id

    @tracks(Events.REPORT_CREATED, group_id="self.project_id")
    def create(self, title: str) -> str:
        return f"{self.project_id}:{title}"

    @tracks(Events.REPORT_CREATED, group_id="project_id")
    @classmethod
    def create_in(cls, project_id: str) -> type[Reports]:
        return cls

    @tracks(Events.PLAN_UPGRADED)
    @staticmethod
    def upgrade(plan: str) -> str:
        return plan

    @tracks(Events.REPORT_CREATED)
    async def acreate(self) -> str:
        return self.project_id


class TestMethods:
    def test_instance_method(self, tracked: CapturedEvents) -> None:
        """self is bound as usual and can supply the group id."""
        assert Reports("proj_9").create("x") == "proj_9:x"
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_9")

    def test_instance_method_called_through_the_class(self, tracked: CapturedEvents) -> None:
        """Reports.create(obj, ...) binds self the same way."""
        assert Reports.create(Reports("proj_8"), "y") == "proj_8:y"
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_8")

    def test_classmethod(self, tracked: CapturedEvents) -> None:
        """@tracks above @classmethod receives cls and the arguments."""
        assert Reports.create_in("proj_7") is Reports
        assert Reports("p").create_in("proj_6") is Reports
        assert [m.group_id for m in tracked.tracks] == ["proj_7", "proj_6"]

    def test_staticmethod(self, tracked: CapturedEvents) -> None:
        """Static methods work through the class and through an instance."""
        assert Reports.upgrade("pro") == "pro"
        assert Reports("p").upgrade("team") == "team"
        tracked.assert_tracked(Events.PLAN_UPGRADED, times=2)

    def test_async_method(self, tracked: CapturedEvents) -> None:
        """Async methods emit after the await."""
        assert asyncio.run(Reports("proj_5").acreate()) == "proj_5"
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_1")


@dataclass
class Task:
    """A result object."""

    project_id: str


class TestGroupIdAndProperties:
    def test_group_id_from_a_parameter(self, tracked: CapturedEvents) -> None:
        """group_id names a parameter, passed positionally or by keyword."""

        @tracks(Events.REPORT_CREATED, group_id="project_id")
        def create(project_id: str, title: str = "") -> None:
            pass

        create("proj_a")
        create(title="t", project_id="proj_b")
        assert [m.group_id for m in tracked.tracks] == ["proj_a", "proj_b"]

    def test_group_id_from_a_default(self, tracked: CapturedEvents) -> None:
        """A parameter left at its default supplies the default."""

        @tracks(Events.REPORT_CREATED, group_id="project_id")
        def create(project_id: str = "proj_default") -> None:
            pass

        create()
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_default")

    def test_group_id_from_the_result(self, tracked: CapturedEvents) -> None:
        """result.<attr> reads the return value; ints become strings."""

        @tracks(Events.REPORT_CREATED, group_id="result.project_id")
        def create() -> Task:
            return Task(project_id="proj_r")

        @tracks(Events.WORKSPACE_SETTINGS_UPDATED, group_id=lambda call: call.result)
        def update() -> int:
            return 42

        create()
        update()
        assert [m.group_id for m in tracked.tracks] == ["proj_r", "42"]

    def test_group_id_from_a_callable_with_arguments(self, tracked: CapturedEvents) -> None:
        """A callable receives the Call with arguments by name."""
        calls: list[Call] = []

        def pick(call: Call) -> str:
            calls.append(call)
            return str(call.arguments["task"].project_id)

        @tracks(Events.REPORT_CREATED, group_id=pick)
        def complete(task: Task, note: str = "n") -> str:
            return "ok"

        complete(Task("proj_c"))
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_c")
        assert calls[0].arguments["note"] == "n"
        assert calls[0].result == "ok"

    def test_properties_constant_and_computed(self, tracked: CapturedEvents) -> None:
        """properties= may be a mapping or a callable of the Call."""

        @tracks(Events.PLAN_UPGRADED, properties={"source": "billing_page"})
        def upgrade() -> None:
            pass

        @tracks(Events.PLAN_UPGRADED, properties=lambda call: {"plan": call.arguments["plan"]})
        def upgrade_to(plan: str) -> None:
            pass

        upgrade()
        upgrade_to("enterprise")
        assert [dict(m.properties) for m in tracked.tracks] == [
            {"source": "billing_page"},
            {"plan": "enterprise"},
        ]

    def test_a_raising_group_callable_falls_back_to_the_context(self) -> None:
        """A bug in the user's extractor costs only the group it computes, never the event."""

        @tracks(Events.REPORT_CREATED, group_id=lambda call: 1 / 0)
        def create() -> str:
            return "created"

        with capture_events(strict=False) as tracked:
            assert create() == "created"
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_1")
        assert stats()["invalid_group_id"] == 1
        assert isinstance(tracked.incidents[0].error, ZeroDivisionError)

    def test_a_raising_properties_callable_sends_without_properties(self) -> None:
        """The event goes out without properties; the incident says why."""

        @tracks(Events.PLAN_UPGRADED, properties=lambda call: call.arguments["missing"])
        def upgrade() -> None:
            pass

        with capture_events(strict=False) as tracked:
            upgrade()
        assert dict(tracked.assert_tracked(Events.PLAN_UPGRADED).properties) == {}
        assert [i.kind for i in tracked.incidents] == ["invalid_properties"]

    def test_bad_extractors_raise_in_strict_mode(self, tracked: CapturedEvents) -> None:
        """Tests see the bug."""

        def broken(call: Call) -> dict[str, Any]:
            raise ZeroDivisionError

        @tracks(Events.PLAN_UPGRADED, properties=broken)
        def upgrade() -> None:
            pass

        with pytest.raises(TrackingUsageError, match="properties= callable"):
            upgrade()

    def test_properties_are_a_snapshot(self, tracked: CapturedEvents) -> None:
        """Properties are taken when the event happens; later mutation changes nothing."""
        cart = {"items": ["a"]}

        @tracks(Events.PLAN_UPGRADED, properties=lambda call: {"cart": cart})
        def checkout() -> None:
            pass

        checkout()
        cart["items"].append("b")
        assert tracked.tracks[0].properties == {"cart": {"items": ["a"]}}


class TestDefinitionTimeErrors:
    def test_rejects_non_plan_events(self) -> None:
        """A string is not an event: define it in the plan."""
        with pytest.raises(TrackingUsageError, match="EventRegistry"):
            tracks("Report_Created")  # type: ignore[arg-type]

    def test_group_level_must_agree_with_the_plan(self) -> None:
        """Restating the level is checked against the plan at import."""
        with pytest.raises(UnknownGroupLevelError, match="'project' level"):
            tracks(Events.REPORT_CREATED, group_level="workspace")
        tracks(Events.REPORT_CREATED, group_level="project")  # agreeing is fine

    def test_rejects_generators(self) -> None:
        """Generators and async generators have no single moment of success."""

        def gen() -> Iterator[int]:
            yield 1

        async def agen() -> Any:
            yield 1

        for func in (gen, agen):
            with pytest.raises(TrackingUsageError, match="generator"):
                tracks(Events.PLAN_UPGRADED)(func)

    def test_group_id_must_name_a_parameter(self) -> None:
        """A typo in group_id fails at decoration and lists the parameters."""
        with pytest.raises(TrackingUsageError, match=r"\['project_id'\]"):

            @tracks(Events.REPORT_CREATED, group_id="projectid")
            def create(project_id: str) -> None:
                pass

    def test_group_id_accepts_any_name_with_var_keyword(self, tracked: CapturedEvents) -> None:
        """With **kwargs any name may arrive, so it is accepted."""

        @tracks(Events.REPORT_CREATED, group_id="project_id")
        def create(**kwargs: Any) -> None:
            pass

        create(project_id="proj_k")
        tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_k")

    def test_rejects_bad_properties(self) -> None:
        """properties= must be a mapping or a callable."""
        with pytest.raises(TrackingUsageError):
            tracks(Events.PLAN_UPGRADED, properties=["a"])  # type: ignore[arg-type]


class TestMissingContext:
    def test_strict_mode_raises_for_a_missing_group(self) -> None:
        """In strict mode (tests) a missing project id raises after the body ran."""
        clear_context()
        bind_context(user_id="u_2", account_id="acc_2")
        ran: list[bool] = []

        @tracks(Events.REPORT_CREATED)
        def create() -> None:
            ran.append(True)

        with capture_events(strict=True), pytest.raises(MissingContextError, match="project"):
            create()
        assert ran == [True]

    def test_lenient_mode_sends_without_group_and_counts(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Without strict mode the track goes out without a group, logged once, counted."""
        clear_context()
        bind_context(user_id="u_3", account_id="acc_3")
        with (
            caplog.at_level(logging.WARNING, "instrumentor"),
            capture_events(strict=False) as tracked,
        ):
            for _ in range(3):
                assert create_report("x") == {"title": "x"}
        assert [m.group_id for m in tracked.tracks] == [None, None, None]
        assert stats()["missing_group"] == 3
        logged = [r for r in caplog.records if "missing_group" in r.getMessage()]
        assert len(logged) == 1
        assert "test_decorators.create_report" in logged[0].getMessage()

    def test_missing_user_drops_the_event(self) -> None:
        """With no user there is nothing to attribute the event to: dropped and counted."""
        clear_context()
        with capture_events(strict=False) as tracked:
            create_report("x")
        tracked.assert_nothing_tracked()
        assert stats()["missing_user"] == 1


def test_decorator_stacks_with_functools_wraps(tracked: CapturedEvents) -> None:
    """@tracks composes with other decorators in either position."""

    def logged(func: Any) -> Any:
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return inner

    @logged
    @tracks(Events.PLAN_UPGRADED)
    def a() -> int:
        return 1

    @tracks(Events.PLAN_UPGRADED)
    @logged
    def b() -> int:
        return 2

    assert a() + b() == 3
    tracked.assert_tracked(Events.PLAN_UPGRADED, times=2)
