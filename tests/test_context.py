"""The identity context: binding, isolation between threads and tasks, hand-off to pools."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from instrumentor import (
    AnalyticsContext,
    Group,
    bind_context,
    bound_context,
    clear_context,
    current_context,
    reset_context,
    with_current_context,
)


class TestBinding:
    def test_starts_empty(self) -> None:
        """Nothing bound: no user, no groups."""
        ctx = current_context()
        assert ctx.user_id is None
        assert dict(ctx.groups) == {}

    def test_bind_merges_into_what_is_bound(self) -> None:
        """A second bind adds to the first; given fields replace, others stay."""
        bind_context(user_id="u_1", account_id="acc_1")
        bind_context(project_id="proj_1")
        ctx = current_context()
        assert (ctx.user_id, ctx.account_id, ctx.project_id) == ("u_1", "acc_1", "proj_1")
        assert ctx.workspace_id is None

    def test_integer_ids_become_strings(self) -> None:
        """Ids are sent as strings whatever type the application uses."""
        bind_context(user_id=7, account_id=42)
        assert (current_context().user_id, current_context().account_id) == ("7", "42")

    def test_names_and_traits(self) -> None:
        """Group names and traits are kept per level, user traits on the context."""
        bind_context(
            user_id="u_1",
            user_traits={"email": "a@b.c"},
            account_id="acc_1",
            account_name="Acme",
            account_traits={"plan": "pro"},
            workspace_id=Group("ws_1", name="Research", traits={"seats": 3}),
        )
        ctx = current_context()
        assert ctx.user_traits == {"email": "a@b.c"}
        assert ctx.groups["account"] == Group("acc_1", "Acme", {"plan": "pro"})
        assert ctx.groups["workspace"].traits == {"seats": 3}

    def test_rebinding_same_id_keeps_name(self) -> None:
        """Binding the bound id again (e.g. per request) does not forget its name."""
        bind_context(account_id="acc_1", account_name="Acme")
        bind_context(account_id="acc_1")
        assert current_context().groups["account"].name == "Acme"
        bind_context(account_id="acc_2")
        assert current_context().groups["account"].name is None

    def test_custom_levels(self) -> None:
        """groups= binds any level by name."""
        bind_context(groups={"organization": "org_1", "team": Group("t_1", name="Red")})
        ctx = current_context()
        assert ctx.group_id("organization") == "org_1"
        assert ctx.groups["team"].name == "Red"

    def test_snapshot_is_immutable(self) -> None:
        """A snapshot cannot be changed, and later binds do not change it."""
        traits = {"email": "a@b.c"}
        bind_context(user_id="u_1", user_traits=traits)
        snapshot = current_context()
        traits["email"] = "changed"
        bind_context(user_id="u_2")
        assert snapshot.user_id == "u_1"
        assert snapshot.user_traits == {"email": "a@b.c"}
        with pytest.raises(AttributeError):
            snapshot.user_id = "x"  # type: ignore[misc]
        with pytest.raises(TypeError):
            snapshot.user_traits["email"] = "x"  # type: ignore[index]

    def test_reset_restores_the_previous_context(self) -> None:
        """reset_context(token) undoes exactly that bind."""
        bind_context(user_id="u_1")
        token = bind_context(user_id="u_2")
        reset_context(token)
        assert current_context().user_id == "u_1"

    def test_clear(self) -> None:
        """clear_context() unbinds everything."""
        bind_context(user_id="u_1", account_id="acc_1")
        clear_context()
        assert current_context() == AnalyticsContext()

    def test_unhashable_and_odd_traits_are_accepted(self) -> None:
        """Traits of any type are kept as given; binding never raises."""
        bind_context(user_id="u_1", user_traits={"tags": ["a"], "obj": object(), 3: "int key"})  # type: ignore[dict-item]
        assert current_context().user_traits["tags"] == ["a"]


class TestBoundContext:
    def test_with_block_restores_on_exit_and_on_error(self) -> None:
        """The previous context comes back after the block, also when it raises."""
        bind_context(user_id="u_1")
        with bound_context(user_id="u_2") as inside:
            assert inside.user_id == "u_2"
        assert current_context().user_id == "u_1"
        with pytest.raises(RuntimeError), bound_context(user_id="u_3"):
            raise RuntimeError
        assert current_context().user_id == "u_1"

    def test_nested_reuse_of_one_instance(self) -> None:
        """One bound_context object can be entered again while entered."""
        binder = bound_context(project_id="p")
        with binder, binder:
            assert current_context().project_id == "p"
        assert current_context().project_id is None

    def test_decorates_sync_functions(self) -> None:
        """As a decorator it binds for each call only."""

        @bound_context(account_id="acc_job")
        def job() -> str | None:
            return current_context().account_id

        assert job() == "acc_job"
        assert current_context().account_id is None

    def test_decorates_async_functions_for_the_whole_await(self) -> None:
        """On a coroutine function the binding lasts until the coroutine finishes."""

        @bound_context(account_id="acc_async")
        async def job() -> str | None:
            await asyncio.sleep(0)
            return current_context().account_id

        assert asyncio.run(job()) == "acc_async"

    def test_concurrent_calls_of_one_decorated_function(self) -> None:
        """Each concurrent call binds and restores its own context."""

        @bound_context(workspace_id="ws")
        async def job(user: str) -> tuple[str | None, str | None]:
            bind_context(user_id=user)
            await asyncio.sleep(0)
            return current_context().user_id, current_context().workspace_id

        async def main() -> list[tuple[str | None, str | None]]:
            return await asyncio.gather(*(job(f"u_{i}") for i in range(10)))

        assert asyncio.run(main()) == [(f"u_{i}", "ws") for i in range(10)]


class TestIsolation:
    def test_threads_do_not_see_each_other(self) -> None:
        """A thread's binding is invisible to others (new threads start empty)."""
        bind_context(user_id="main")
        seen: dict[str, str | None] = {}
        barrier = threading.Barrier(4)

        def worker(name: str) -> None:
            seen[f"{name}-before"] = current_context().user_id
            bind_context(user_id=name)
            barrier.wait()
            seen[name] = current_context().user_id

        threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(seen[f"t{i}"] == f"t{i}" for i in range(4))
        assert all(seen[f"t{i}-before"] is None for i in range(4))
        assert current_context().user_id == "main"

    def test_tasks_inherit_but_do_not_leak(self) -> None:
        """A task starts with its creator's context; its own binds stay inside it."""

        async def child() -> str | None:
            inherited = current_context().user_id
            bind_context(user_id="child")
            return inherited

        async def main() -> tuple[str | None, str | None]:
            bind_context(user_id="parent")
            inherited = await asyncio.create_task(child())
            return inherited, current_context().user_id

        assert asyncio.run(main()) == ("parent", "parent")

    def test_thread_pools_need_the_helper(self) -> None:
        """executor.submit does not carry context; with_current_context does."""
        bind_context(user_id="u_req")

        def who() -> str | None:
            return current_context().user_id

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            bare = pool.submit(who).result()
            carried = pool.submit(with_current_context(who)).result()
            after = pool.submit(who).result()
        assert (bare, carried, after) == (None, "u_req", None)

    def test_to_thread_copies_context(self) -> None:
        """asyncio.to_thread copies the context by itself."""

        async def main() -> str | None:
            bind_context(user_id="u_async")
            return await asyncio.to_thread(lambda: current_context().user_id)

        assert asyncio.run(main()) == "u_async"


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("str exploded")


class RaisingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("getitem exploded")

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


class TestBadInput:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"user_id": BadStr()},
            {"account_id": BadStr()},
            {"user_traits": RaisingMapping()},
            {"user_traits": ["not", "a", "mapping"]},
            {"groups": ["acc"]},
            {"groups": {"account": BadStr()}},
        ],
    )
    def test_never_raises_and_keeps_the_context(self, kwargs: dict[str, Any]) -> None:
        """Unusable input is reported as invalid_context and changes nothing."""
        from instrumentor import configure, stats

        configure(transports=[])
        bind_context(user_id="u_ok")
        token = bind_context(**kwargs)
        assert current_context().user_id == "u_ok"
        reset_context(token)
        assert stats()["invalid_context"] == 1

    def test_strict_mode_raises_for_unusable_input(self) -> None:
        """In strict mode the developer sees it."""
        from instrumentor import TrackingUsageError, configure

        configure(strict=True, transports=[])
        with pytest.raises(TrackingUsageError, match="mapping"):
            bind_context(user_traits=["x"])  # type: ignore[arg-type]

    def test_empty_ids_are_not_bound(self) -> None:
        """An empty string is no id (a missing user stays missing)."""
        bind_context(user_id="u_1", account_id="acc_1")
        bind_context(user_id="", account_id="", groups={"team": ""})
        ctx = current_context()
        assert (ctx.user_id, ctx.account_id, ctx.group_id("team")) == ("u_1", "acc_1", None)

    def test_traits_are_a_snapshot_of_json_data(self) -> None:
        """Mutating what was bound later changes nothing that will be sent."""
        roles = ["viewer"]
        bind_context(
            user_id="u",
            user_traits={"roles": roles, "joined": __import__("datetime").date(2026, 1, 2)},
        )
        roles.append("admin")
        assert current_context().user_traits == {"roles": ["viewer"], "joined": "2026-01-02"}

    def test_direct_construction_is_frozen_and_coerced(self) -> None:
        """AnalyticsContext(...) built by hand is as immutable as a bound one."""
        traits = {"plan": "free"}
        ctx = AnalyticsContext(user_id="u", user_traits=traits, groups={"account": "acc"})  # type: ignore[dict-item]
        traits["plan"] = "pro"
        assert ctx.user_traits == {"plan": "free"}
        assert ctx.groups["account"] == Group("acc")
        assert ctx.account_id == "acc"


class TestSharedBoundContext:
    def test_one_instance_entered_from_many_threads(self) -> None:
        """A module-level bound_context used by concurrent threads restores each correctly."""
        system = bound_context(account_id="acc_system")
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def work(user: str) -> None:
            try:
                bind_context(user_id=user)
                with system:
                    barrier.wait()
                    assert current_context().account_id == "acc_system"
                assert current_context().account_id is None
                assert current_context().user_id == user
            except BaseException as exc:  # collected for the main thread's assertion
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"u{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []

    def test_one_instance_entered_from_many_tasks(self) -> None:
        """Interleaved tasks entering one instance each restore their own context."""
        system = bound_context(workspace_id="ws_sys")

        async def work(user: str) -> tuple[str | None, str | None]:
            bind_context(user_id=user)
            with system:
                await asyncio.sleep(0)
            return current_context().user_id, current_context().workspace_id

        async def main() -> list[tuple[str | None, str | None]]:
            return await asyncio.gather(*(work(f"u{i}") for i in range(10)))

        assert asyncio.run(main()) == [(f"u{i}", None) for i in range(10)]

    def test_rejects_generators(self) -> None:
        """A generator's body runs after the call: decorating one is an error at definition."""
        from instrumentor import TrackingUsageError

        def gen() -> Any:
            yield current_context().user_id

        with pytest.raises(TrackingUsageError, match="generator"):
            bound_context(user_id="u")(gen)


def test_an_empty_group_id_is_a_value_error() -> None:
    """Group("") raises a public, catchable error (ValueError and InstrumentorError)."""
    from instrumentor import InstrumentorError

    with pytest.raises(ValueError, match="empty") as info:
        Group("")
    assert isinstance(info.value, InstrumentorError)


def test_bad_input_is_logged_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Bad input logs one line saying what was wrong, not a stack trace."""
    import logging

    from instrumentor import configure

    configure(transports=[])
    with caplog.at_level(logging.WARNING, "instrumentor"):
        bind_context(user_traits=["x"])  # type: ignore[arg-type]
    (record,) = [r for r in caplog.records if "invalid_context" in r.getMessage()]
    assert record.exc_info is None
    assert "traits must be a mapping" in record.getMessage()


def test_group_ids_are_read_only() -> None:
    """The id index of a context cannot be changed to reroute its events."""
    from instrumentor import bind_context, current_context

    bind_context(account_id="a_1", project_id="p_1")
    ids = current_context().group_ids
    with pytest.raises(TypeError):
        ids["project"] = "EVIL"  # type: ignore[index]
    assert current_context().group_id("project") == "p_1"
