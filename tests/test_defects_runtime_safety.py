"""Run-time safety: the recursion limit, async receivers, coroutines closed before they start.

* Near the recursion limit, a failing emission must not let the RecursionError of reporting it
  reach the caller: nothing instrumentor raises at run time reaches business code.
* An ``async def`` receiver of ``event_emitted`` would never run (its coroutine is dropped), so
  connecting one is refused, in every form: function, partial, bound method, callable object.
* A tracked coroutine closed or cancelled before its first step leaves no coroutine behind that
  "was never awaited", exactly as an undecorated one, and tracks nothing.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from instrumentor import (
    bind_context,
    establish_group_hierarchy,
    group,
    identify,
    track,
    tracks,
)
from instrumentor.signals import Emission, event_emitted
from instrumentor.testing import CapturedEvents, capture_events
from tests.plan import Events


@pytest.fixture
def captured() -> Iterator[CapturedEvents]:
    """Emissions captured in memory, not strict (a lost event is reported, never raised)."""
    with capture_events(strict=False) as captured:
        bind_context(user_id="u_1", account_id="acc_1", workspace_id="ws_1", project_id="proj_1")
        yield captured


# --- 1. the recursion limit --------------------------------------------------------------------

#: How many times a tracked body below ran to its end (a list: updating it makes no call).
_finished = [0]


@tracks(Events.REPORT_CREATED)
def _plain_body() -> None:
    _finished[0] += 1


@tracks(Events.REPORT_CREATED, group_id="project_id", properties=lambda call: {"n": 1})
def _body_read_from_the_call(project_id: str = "proj_1") -> None:
    _finished[0] += 1


class _Escapes:
    """The RecursionErrors one probe saw, linked as ``(error, before, after, rest)`` tuples.

    ``before`` and ``after`` are the count of finished bodies around the call. Recording one
    makes no call and compares nothing (a comparison, too, checks the recursion depth), so it
    works at the limit itself.
    """

    def __init__(self) -> None:
        self.chain: list[Any] = [None]

    def errors(self) -> list[tuple[RecursionError, bool]]:
        found: list[tuple[RecursionError, bool]] = []
        link = self.chain[0]
        while link is not None:
            error, before, after, link = link
            found.append((error, after != before))
        return found


def _probe_every_depth(function: Callable[..., Any], *args: Any) -> _Escapes:
    """Recurse to the recursion limit, then call ``function(*args)`` at every depth going back up.

    Each depth is probed, so whichever frame of the emission path overflows, one probe hits it.
    The call is made from the probing frame itself (no lambda between), so a RecursionError
    whose traceback ends in that frame was raised by the call itself (the caller was too deep
    to call anything); one whose traceback goes further was raised inside ``function``.
    """
    escapes = _Escapes()
    chain = escapes.chain

    def dive() -> None:
        try:  # noqa: SIM105 - suppress() is a call, which fails at the limit too
            dive()
        except RecursionError:
            pass
        before = _finished[0]
        try:
            function(*args)
        except RecursionError as error:
            chain[0] = (error, before, _finished[0], chain[0])

    dive()
    return escapes


def _raised_inside(error: BaseException) -> bool:
    """Whether ``error`` was raised inside the probed call rather than by calling it."""
    traceback = error.__traceback__
    return traceback is not None and traceback.tb_next is not None


class TestRecursionLimit:
    @pytest.mark.parametrize(
        "function", [_plain_body, _body_read_from_the_call], ids=["plain", "read_from_call"]
    )
    def test_a_tracked_function_that_returned_never_raises(
        self, captured: CapturedEvents, function: Callable[[], None]
    ) -> None:
        """Once the body returned, no RecursionError of the emission reaches the caller."""
        errors = _probe_every_depth(function).errors()
        assert errors, "the probe never reached the recursion limit"
        assert [error for error, finished in errors if finished] == []
        assert captured.tracks, "no probe was shallow enough to track"

    @pytest.mark.parametrize(
        ("function", "args"),
        [
            (track, (Events.REPORT_CREATED,)),
            (Events.REPORT_CREATED.track, ()),
            (identify, ()),
            (group, ()),
            (establish_group_hierarchy, ()),
        ],
        ids=["track", "Events.X.track", "identify", "group", "establish_group_hierarchy"],
    )
    def test_the_imperative_api_never_raises_from_inside(
        self, captured: CapturedEvents, function: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        """A call that could be made returns; only the call itself may fail at the limit."""
        errors = _probe_every_depth(function, *args).errors()
        assert errors, "the probe never reached the recursion limit"
        assert [error for error, _ in errors if _raised_inside(error)] == []
        assert captured.messages, "no probe was shallow enough to send anything"


# --- 2. async receivers --------------------------------------------------------------------


async def _async_receiver(sender: Any, *, emission: Emission) -> None:
    """Would never run: its coroutine is dropped by the dispatch."""


async def _async_generator_receiver(sender: Any, *, emission: Emission) -> Any:
    yield emission


class _AsyncReceivers:
    async def __call__(self, sender: Any, *, emission: Emission) -> None:
        """An object whose call is async."""

    async def method(self, sender: Any, *, emission: Emission) -> None:
        """An async method."""


def _sync_receiver(sender: Any, *, emission: Emission, into: list[Emission]) -> None:
    into.append(emission)


_ASYNC_RECEIVERS: dict[str, Callable[..., Any]] = {
    "function": _async_receiver,
    "async_generator": _async_generator_receiver,
    "partial": functools.partial(_async_receiver),
    "partial_of_method": functools.partial(_AsyncReceivers().method),
    "bound_method": _AsyncReceivers().method,
    "callable_object": _AsyncReceivers(),
    "partial_of_object": functools.partial(_AsyncReceivers()),
}


@pytest.fixture
def _disconnect_async_receivers() -> Iterator[None]:
    """Should one be connected after all, it is not left to break the tests that follow."""
    yield
    for receiver in _ASYNC_RECEIVERS.values():
        event_emitted.disconnect(receiver)


@pytest.mark.usefixtures("_disconnect_async_receivers")
class TestAsyncReceivers:
    @pytest.mark.parametrize("receiver", _ASYNC_RECEIVERS.values(), ids=_ASYNC_RECEIVERS.keys())
    def test_connect_refuses_an_async_receiver(self, receiver: Any) -> None:
        """The TypeError says why and what to do; nothing is connected."""
        before = dict(event_emitted.receivers)
        with pytest.raises(TypeError) as info:
            event_emitted.connect(receiver)
        message = str(info.value)
        assert "async receiver" in message
        assert "emitting thread" in message
        assert "queue" in message
        assert dict(event_emitted.receivers) == before

    @pytest.mark.parametrize("receiver", _ASYNC_RECEIVERS.values(), ids=_ASYNC_RECEIVERS.keys())
    def test_connect_via_and_connected_to_refuse_it_too(self, receiver: Any) -> None:
        """The decorator and the context manager go through the same check."""
        before = dict(event_emitted.receivers)
        with pytest.raises(TypeError, match="async receiver"):
            event_emitted.connect_via(Events)(receiver)
        with pytest.raises(TypeError, match="async receiver"), event_emitted.connected_to(receiver):
            pass  # pragma: no cover - never entered
        assert dict(event_emitted.receivers) == before

    def test_the_message_names_the_receiver(self) -> None:
        """The function behind a partial, the class of a callable object."""
        with pytest.raises(TypeError, match="_async_receiver"):
            event_emitted.connect(_ASYNC_RECEIVERS["partial"])
        with pytest.raises(TypeError, match="_AsyncReceivers"):
            event_emitted.connect(_ASYNC_RECEIVERS["callable_object"])

    def test_plain_receivers_still_connect_and_run(self, captured: CapturedEvents) -> None:
        """A partial of a plain function, and an object with a plain ``__call__``, receive."""
        got: list[Emission] = []

        class Plain:
            def __call__(self, sender: Any, *, emission: Emission) -> None:
                got.append(emission)

        plain = Plain()
        partial = functools.partial(_sync_receiver, into=got)
        with event_emitted.connected_to(partial), event_emitted.connected_to(plain):
            track(Events.REPORT_CREATED)
        assert len(got) == 2
        captured.assert_tracked(Events.REPORT_CREATED, times=1)


# --- 4. coroutines closed or cancelled before they start -----------------------------------


@tracks(Events.REPORT_CREATED)
async def _create_report(title: str) -> str:
    await asyncio.sleep(0)
    return title


async def _body(title: str) -> str:
    await asyncio.sleep(0)
    return title


@tracks(Events.REPORT_CREATED)
def _hides_its_async_nature(title: str) -> Any:
    """A sync function returning a coroutine (tracked after that coroutine completes)."""
    return _body(title)


async def _undecorated(title: str) -> str:
    await asyncio.sleep(0)
    return title


_COROUTINE_FUNCTIONS = {
    "async_def": _create_report,
    "returns_a_coroutine": _hides_its_async_nature,
    "undecorated": _undecorated,  # the reference: what the decorated ones must match
}


def _runtime_warnings(action: Callable[[], None]) -> list[str]:
    """The RuntimeWarnings ``action`` leads to, garbage collection included."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def _close_before_start(function: Callable[[str], Any]) -> None:
    coroutine = function("Q3")
    coroutine.close()
    del coroutine


def _cancel_before_start(function: Callable[[str], Any]) -> None:
    async def main() -> None:
        task = asyncio.create_task(function("Q3"))
        task.cancel()  # before the loop ever ran it
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


class TestClosedBeforeStart:
    def test_an_async_def_stays_a_coroutine_function(self) -> None:
        """``inspect.iscoroutinefunction`` still tells the truth about the decorated function."""
        assert inspect.iscoroutinefunction(_create_report)
        assert not inspect.iscoroutinefunction(_hides_its_async_nature)

    @pytest.mark.parametrize(
        "function", _COROUTINE_FUNCTIONS.values(), ids=_COROUTINE_FUNCTIONS.keys()
    )
    def test_closed_before_start_warns_nothing_and_tracks_nothing(
        self, captured: CapturedEvents, function: Callable[[str], Any]
    ) -> None:
        """``coro.close()`` before the first step: no "never awaited" warning, no event."""
        assert _runtime_warnings(lambda: _close_before_start(function)) == []
        captured.assert_nothing_tracked()

    @pytest.mark.parametrize(
        "function", _COROUTINE_FUNCTIONS.values(), ids=_COROUTINE_FUNCTIONS.keys()
    )
    def test_task_cancelled_before_start_warns_nothing_and_tracks_nothing(
        self, captured: CapturedEvents, function: Callable[[str], Any]
    ) -> None:
        """``task.cancel()`` before the loop ran it: no warning, no event."""
        assert _runtime_warnings(lambda: _cancel_before_start(function)) == []
        captured.assert_nothing_tracked()

    @pytest.mark.parametrize(
        "function", [_create_report, _hides_its_async_nature], ids=["async_def", "returns_coro"]
    )
    def test_completion_is_still_tracked_once(
        self, captured: CapturedEvents, function: Callable[[str], Any]
    ) -> None:
        """Awaited to the end, the call returns its result and tracks the event once."""
        assert asyncio.run(function("Q3")) == "Q3"
        captured.assert_tracked(Events.REPORT_CREATED, times=1, group_id="proj_1")
