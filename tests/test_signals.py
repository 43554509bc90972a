"""The private blinker signal: strong receivers, isolation of failures, blinker's test tools."""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any

import blinker
import pytest

from instrumentor import bind_context, configure, stats, track
from instrumentor._signals import EmissionSignal, event_emitted, namespace
from instrumentor.signals import Emission
from tests.plan import Events, OrgEvents


@pytest.fixture(autouse=True)
def identity() -> None:
    bind_context(user_id="u_1", account_id="acc_1", project_id="proj_1")


def test_signal_is_private() -> None:
    """The signal lives in instrumentor's own namespace, not blinker's shared one."""
    assert namespace["instrumentor.event_emitted"] is event_emitted
    assert "instrumentor.event_emitted" not in blinker.default_namespace


def test_receivers_get_the_emission_with_its_registry_as_sender() -> None:
    """A receiver is called with the registry class and the Emission."""
    got: list[tuple[Any, Emission]] = []

    def receiver(sender: Any, *, emission: Emission) -> None:
        got.append((sender, emission))

    with event_emitted.connected_to(receiver):
        configure(transports=[])
        track(Events.REPORT_CREATED, properties={"k": 1})
    sender, emission = got[0]
    assert sender is Events
    assert (emission.event, emission.user_id, emission.group_id) == (
        Events.REPORT_CREATED,
        "u_1",
        "proj_1",
    )
    assert emission.group_level == "project"
    assert emission.properties == {"k": 1}
    assert [m.type for m in emission.messages][-1] == "track"
    assert emission.messages is emission.messages  # built once


def test_sender_specific_receivers() -> None:
    """connect(..., sender=Registry) receives only that registry's events."""
    got: list[str] = []

    def receiver(sender: Any, *, emission: Emission) -> None:
        assert emission.event is not None
        got.append(emission.event.event_name)

    configure(transports=[])
    event_emitted.connect(receiver, sender=OrgEvents)
    try:
        bind_context(groups={"organization": "o", "team": "t"})
        track(Events.PLAN_UPGRADED)
        track(OrgEvents.TEAM_JOINED)
    finally:
        event_emitted.disconnect(receiver)
    assert got == ["Team_Joined"]


def test_receivers_are_held_strongly_by_default() -> None:
    """A closure connected and then dropped keeps receiving (blinker's weak default is off)."""
    got: list[int] = []

    def connect_closure() -> weakref.ref[Any]:
        def receiver(sender: Any, **kw: Any) -> None:
            got.append(1)

        event_emitted.connect(receiver)
        return weakref.ref(receiver)

    configure(transports=[])
    ref = connect_closure()
    gc.collect()
    track(Events.PLAN_UPGRADED)
    receiver = ref()
    assert receiver is not None
    event_emitted.disconnect(receiver)
    assert got == [1]


def test_weak_receivers_stay_weak() -> None:
    """weak=True is honoured: once collected, the receiver is no longer called."""
    got: list[int] = []

    class Receiver:
        def __call__(self, sender: Any, **kw: Any) -> None:
            got.append(1)

    configure(transports=[])
    receiver = Receiver()
    event_emitted.connect(receiver, weak=True)
    track(Events.PLAN_UPGRADED)
    del receiver
    gc.collect()
    track(Events.PLAN_UPGRADED)
    assert got == [1]


def test_a_failing_receiver_does_not_stop_the_others() -> None:
    """A raising receiver is counted and logged; the others run; the caller sees nothing."""
    got: list[str] = []

    def broken(sender: Any, **kw: Any) -> None:
        raise RuntimeError("receiver bug")

    def healthy(sender: Any, **kw: Any) -> None:
        got.append("ok")

    configure(transports=[])
    with event_emitted.connected_to(broken), event_emitted.connected_to(healthy):
        track(Events.PLAN_UPGRADED)
        results = event_emitted.send(Events, emission=None)
    assert got == ["ok", "ok"]
    assert stats()["receiver_error"] == 2
    assert [r for _, r in results] == [None]


def test_muted_signal_calls_no_one() -> None:
    """blinker's muted() works for tests."""
    got: list[int] = []

    def receiver(sender: Any, **kw: Any) -> None:
        got.append(1)

    configure(transports=[])
    with event_emitted.connected_to(receiver), event_emitted.muted():
        track(Events.PLAN_UPGRADED)
    assert got == []


@pytest.mark.parametrize("how", ["muted()", "is_muted = True"])
def test_a_muted_signal_calls_no_one_after_warm_up(how: str) -> None:
    """Muting stops every dispatch, also for senders already looked up, and identify/group."""
    import instrumentor

    got: list[object] = []

    def receiver(sender: Any, *, emission: Any) -> None:
        got.append(sender)

    configure(transports=[])
    with event_emitted.connected_to(receiver):
        track(Events.PLAN_UPGRADED)  # warms the sender cache of Events
        instrumentor.identify()  # and of bare calls
        before = len(got)
        if how == "muted()":
            with event_emitted.muted():
                track(Events.PLAN_UPGRADED)
                instrumentor.identify()
                instrumentor.group("account")
        else:
            event_emitted.is_muted = True
            try:
                track(Events.PLAN_UPGRADED)
                instrumentor.identify()
                instrumentor.group("account")
            finally:
                event_emitted.is_muted = False
        assert len(got) == before
        track(Events.PLAN_UPGRADED)
        assert len(got) == before + 1


def test_signal_class_is_a_blinker_signal() -> None:
    """Applications can use every blinker API on it."""
    assert isinstance(event_emitted, blinker.NamedSignal)
    assert isinstance(event_emitted, EmissionSignal)


class BadReprError(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    __str__ = __repr__


class RaisingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError("handler exploded")


@pytest.mark.parametrize("failure", ["plain", "bad_repr", "raising_log_handler"])
def test_nothing_about_a_failure_stops_later_receivers(failure: str) -> None:
    """A failing receiver whose error cannot be shown or logged still lets the rest run."""
    ran: list[int] = []

    def bad(sender: Any, **kw: Any) -> None:
        raise BadReprError if failure == "bad_repr" else RuntimeError("bug")

    goods = [lambda sender, i=i, **kw: ran.append(i) for i in range(8)]
    handler = RaisingHandler()
    logger = logging.getLogger("instrumentor")
    configure(transports=[])
    event_emitted.connect(bad)
    for good in goods:
        event_emitted.connect(good)
    if failure == "raising_log_handler":
        logger.addHandler(handler)
    try:
        track(Events.PLAN_UPGRADED)
    finally:
        logger.removeHandler(handler)
        for receiver in (bad, *goods):
            event_emitted.disconnect(receiver)
    assert sorted(ran) == list(range(8))
    assert stats()["receiver_error"] == 1


def test_a_failing_transport_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The log rate limit keys on the receiver's type, not its changing repr."""

    class Flaky:
        calls = 0
        inline = True  # delivered on the emitting thread, as the memory transport is

        def deliver(self, batch: Any) -> None:
            Flaky.calls += 1
            raise ConnectionError("provider down")

        def close(self) -> None:
            pass

        def __repr__(self) -> str:
            return f"Flaky(calls={Flaky.calls})"

    configure(transports=[Flaky()])
    with caplog.at_level(logging.WARNING, "instrumentor"):
        for _ in range(200):
            track(Events.PLAN_UPGRADED)
    assert Flaky.calls == 200
    assert stats()["receiver_error"] == 200
    logged = [r for r in caplog.records if "receiver_error" in r.getMessage()]
    assert len(logged) == 1
    assert "InlineDestination(" in logged[0].getMessage()
    assert "Flaky)" in logged[0].getMessage()


def test_sender_cache_is_bounded() -> None:
    """send() with many distinct senders does not grow the receiver cache without bound."""
    configure(transports=[])
    for i in range(1000):
        event_emitted.send(object(), emission=None)
        assert len(event_emitted._cache) <= 256, i
