"""AccoilTransport's sending machinery: its sender threads and its connections, on real sockets.

The sender threads are started on first need and kept between batches, stopped by close() and
started afresh in a forked child; the connections are kept alive, at most ``max_in_flight`` of
them, replaced when the server closed them, renewed after close() and after a fork.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import gc
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor.exceptions import INVALID_MESSAGE, PartialDeliveryError
from instrumentor.transports import AccoilTransport
from tests.fault_server import FaultServer
from tests.support import run_python
from tests.transports.recording import RecordingHandler

KEY = "acc_live_senders_0123"
NOW = _dt.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=_dt.timezone.utc)
SENDER = "instrumentor-accoil"


def track(user: str, event: str = "Report_Created") -> TrackMessage:
    return TrackMessage(
        user_id=user,
        event=event,
        group_id="ws1",
        group_type="workspace",
        category="core_value",
        properties={},
        timestamp=NOW,
    )


def interleaved(users: int, steps: int) -> list[Message]:
    """``steps`` tracks for each of ``users`` users, interleaved (u0 s0, u1 s0, ..., u0 s1...)."""
    return [track(f"u{u}", f"Step_{s}") for s in range(steps) for u in range(users)]


def senders() -> set[threading.Thread]:
    """The transport sender threads alive in this process."""
    return {t for t in threading.enumerate() if t.name == SENDER and t.is_alive()}


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A loopback Accoil answering 202."""
    with FaultServer(status=202) as running:
        yield running


@pytest.fixture
def transports() -> Iterator[Callable[..., AccoilTransport]]:
    """Builds transports (closed after the test)."""
    made: list[AccoilTransport] = []

    def build(**kwargs: Any) -> AccoilTransport:
        kwargs.setdefault("api_key", KEY)
        made.append(AccoilTransport(**kwargs))
        return made[-1]

    yield build
    for transport in made:
        transport.close()


class Slow(RecordingHandler):
    """A mock Accoil that answers 202 after a pause and notes the thread of each request."""

    def __init__(self, pause: float = 0.005, jitter: float = 0.0) -> None:
        super().__init__()
        self.pause = pause
        self.jitter = random.Random(7)
        self.spread = jitter
        self.threads: list[threading.Thread] = []
        self.in_flight = 0
        self.most = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.threads.append(threading.current_thread())
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            pause = self.pause + self.jitter.random() * self.spread
        time.sleep(pause)
        with self.lock:
            self.in_flight -= 1
        super().__call__(request)
        return httpx.Response(202)

    def sent(self) -> list[tuple[str, str]]:
        """(user, event) of each track, in the order they arrived."""
        with self.lock:
            return [(r.url.path, r.content.decode()) for r in self.requests]


def events_by_user(handler: RecordingHandler) -> dict[str, list[str]]:
    import json

    by_user: dict[str, list[str]] = {}
    with handler.lock:
        for request in handler.requests:
            body = json.loads(request.content)
            by_user.setdefault(body["userId"], []).append(body["event"])
    return by_user


class TestSenderThreads:
    def test_threads_are_kept_between_batches(
        self, transports: Callable[..., AccoilTransport]
    ) -> None:
        """Three batches share at most max_in_flight - 1 helper threads, alive between them."""
        handler = Slow()
        transport = transports(http_transport=httpx.MockTransport(handler), max_in_flight=4)
        for _ in range(3):
            transport.deliver(interleaved(users=8, steps=1))
        helpers = {t for t in handler.threads if t is not threading.current_thread()}
        assert helpers, "no request went out on a sender thread"
        assert len(helpers) <= 3
        assert all(t.name == SENDER and t.is_alive() for t in helpers)

    def test_close_stops_them_and_a_later_batch_starts_new_ones(
        self, transports: Callable[..., AccoilTransport]
    ) -> None:
        """close() ends the sender threads; the next delivery starts its own and succeeds."""
        handler = Slow()
        transport = transports(http_transport=httpx.MockTransport(handler), max_in_flight=4)
        before = senders()
        transport.deliver(interleaved(users=8, steps=1))
        started = senders() - before
        assert started
        transport.close()
        assert not any(t.is_alive() for t in started)
        transport.deliver(interleaved(users=8, steps=1))
        assert len(handler.requests) == 16
        assert senders() - before - started

    def test_a_transport_dropped_without_close_ends_its_threads(self) -> None:
        """The sender threads do not keep their transport alive, nor outlive it."""
        transport = AccoilTransport(KEY, http_transport=httpx.MockTransport(Slow()))
        before = senders()
        transport.deliver(interleaved(users=8, steps=1))
        started = senders() - before
        assert started
        del transport
        gc.collect()
        for thread in started:
            thread.join(10)
        assert not any(t.is_alive() for t in started)

    def test_each_users_order_is_kept_with_many_users(
        self, transports: Callable[..., AccoilTransport]
    ) -> None:
        """200 users' 5 steps each, answered after random pauses: every user's in order."""
        handler = Slow(pause=0.0, jitter=0.002)
        transport = transports(http_transport=httpx.MockTransport(handler), max_in_flight=8)
        batch = interleaved(users=200, steps=5)
        transport.deliver(batch)
        by_user = events_by_user(handler)
        assert len(by_user) == 200
        assert all(events == [f"Step_{s}" for s in range(5)] for events in by_user.values())
        assert 1 < handler.most <= 8

    def test_two_callers_at_once_both_finish(
        self, transports: Callable[..., AccoilTransport]
    ) -> None:
        """Two threads delivering through one transport share its senders; both batches go."""
        handler = Slow()
        transport = transports(http_transport=httpx.MockTransport(handler), max_in_flight=3)
        errors: list[BaseException] = []

        def deliver(prefix: str) -> None:
            try:
                transport.deliver(
                    [track(f"{prefix}{u}", f"Step_{s}") for s in range(3) for u in range(6)]
                )
            except BaseException as exc:
                errors.append(exc)

        callers = [threading.Thread(target=deliver, args=(p,)) for p in ("a", "b")]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(30)
        assert not any(c.is_alive() for c in callers)
        assert errors == []
        by_user = events_by_user(handler)
        assert len(by_user) == 12
        assert all(events == ["Step_0", "Step_1", "Step_2"] for events in by_user.values())

    def test_one_in_flight_starts_no_thread(
        self, transports: Callable[..., AccoilTransport]
    ) -> None:
        """With max_in_flight=1 everything is sent by the calling thread."""
        handler = Slow(pause=0.0)
        transport = transports(http_transport=httpx.MockTransport(handler), max_in_flight=1)
        transport.deliver(interleaved(users=5, steps=2))
        assert set(handler.threads) == {threading.current_thread()}


class TestConnections:
    def test_kept_alive_and_at_most_max_in_flight(
        self, server: FaultServer, transports: Callable[..., AccoilTransport]
    ) -> None:
        """Batches reuse their connections: never more than max_in_flight of them."""
        transport = transports(endpoint=server.url, max_in_flight=4)
        for _ in range(3):
            transport.deliver(interleaved(users=16, steps=2))
        received = server.received()
        assert len(received) == 96
        assert 1 <= len({r.connection for r in received}) <= 4

    def test_one_in_flight_uses_one_connection(
        self, server: FaultServer, transports: Callable[..., AccoilTransport]
    ) -> None:
        """One request at a time: one connection, kept for the next batch."""
        transport = transports(endpoint=server.url, max_in_flight=1)
        transport.deliver(interleaved(users=3, steps=2))
        transport.deliver(interleaved(users=3, steps=2))
        assert len({r.connection for r in server.received()}) == 1

    def test_close_then_reuse_opens_new_connections(
        self, server: FaultServer, transports: Callable[..., AccoilTransport]
    ) -> None:
        """After close() the next delivery connects anew, and everything arrives."""
        transport = transports(endpoint=server.url, max_in_flight=1)
        transport.deliver([track("u1")])
        transport.close()
        transport.deliver([track("u2")])
        first, second = server.received()
        assert first.connection != second.connection

    def test_a_connection_the_server_closed_is_replaced(
        self, server: FaultServer, transports: Callable[..., AccoilTransport]
    ) -> None:
        """Idle connections closed by the server cost no failed request: new ones are opened."""
        transport = transports(endpoint=server.url, max_in_flight=2)
        transport.deliver(interleaved(users=4, steps=1))
        before = {r.connection for r in server.received()}
        server.refuse_for(60)  # closes the idle keep-alive connections...
        server.reset()  # ...forgets what it saw, and listens again at once
        transport.deliver(interleaved(users=4, steps=1))  # raises if a request failed
        after = server.received()
        assert len(after) == 4
        assert not before & {r.connection for r in after}

    def test_a_proxy_named_by_the_environment_is_used(
        self,
        server: FaultServer,
        transports: Callable[..., AccoilTransport],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """HTTP_PROXY is honoured as httpx honours it: the request goes to the proxy."""
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", server.url)
        transport = transports(endpoint="http://accoil.invalid")
        transport.deliver([track("u1")])
        (request,) = server.received()
        assert request.path == "http://accoil.invalid/v2/track"
        assert request.headers["authorization"] == f"Basic {KEY}"

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
    def test_a_forked_child_sends_on_its_own_threads_and_connections(
        self, server: FaultServer, transports: Callable[..., AccoilTransport]
    ) -> None:
        """The child starts its own senders and connects anew; the parent carries on."""
        transport = transports(endpoint=server.url, max_in_flight=4)
        transport.deliver(interleaved(users=8, steps=1))
        parent_connections = {r.connection for r in server.received()}
        child_batch = interleaved(users=8, steps=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # the child: report by exit status only, never return into pytest
            status = 1
            try:
                signal.alarm(30)  # never hang the test run
                transport.deliver(child_batch)
                status = 0 if senders() else 2  # its own sender threads, alive
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0
        ids = {m.message_id for m in child_batch}
        child = [r for r in server.received() if r.message_ids[0] in ids]
        assert len(child) == 16
        assert not {r.connection for r in child} & parent_connections
        transport.deliver(interleaved(users=8, steps=1))  # the parent's senders still work
        assert len(server.received()) == 8 + 16 + 8


class TestBodies:
    def test_traits_are_normalised_as_to_dict_does(
        self, transports: Callable[..., AccoilTransport]
    ) -> None:
        """Identify and group traits go out as to_dict() gives them: dates, sets, decimals."""
        import json

        recorder = RecordingHandler()
        transport = transports(http_transport=httpx.MockTransport(recorder))
        traits = {"since": NOW, "tags": {"b", "a"}, "price": decimal.Decimal("1.50"), "n": 2}
        identify = IdentifyMessage(user_id="u1", group_id=None, traits=traits, timestamp=NOW)
        group = GroupMessage("acme", "account", None, "u1", traits, NOW)
        transport.deliver([identify, group])
        bodies = [json.loads(r.content) for r in recorder.requests]
        assert [b["traits"] for b in bodies] == [identify.to_dict()["traits"]] * 2
        assert bodies[0]["traits"] == {
            "since": "2024-05-01T12:00:00.123Z",
            "tags": ["a", "b"],
            "price": "1.50",
            "n": 2,
        }

    @pytest.mark.parametrize("api_version", ["v2", "v1"])
    def test_a_track_whose_properties_cannot_be_read_is_refused_alone(
        self, transports: Callable[..., AccoilTransport], api_version: str
    ) -> None:
        """Accoil is not sent properties, but a mapping that raises marks a broken message."""

        class Raising(dict[str, Any]):
            def keys(self) -> Any:
                raise RuntimeError("unreadable")

        class Unreadable:  # a Mapping in name only: reading it raises
            def keys(self) -> Any:
                raise RuntimeError("unreadable")

            def __getitem__(self, key: str) -> Any:
                raise RuntimeError("unreadable")

        recorder = RecordingHandler()
        transport = transports(
            http_transport=httpx.MockTransport(recorder), api_version=api_version
        )
        bad = TrackMessage("u2", "Report_Created", None, "account", "c", Unreadable(), NOW)  # type: ignore[arg-type]
        good = [track("u1"), track("u3")]
        with pytest.raises(PartialDeliveryError) as caught:
            transport.deliver([good[0], bad, good[1]])
        ((failed, reason),) = caught.value.failed
        assert failed is bad
        assert INVALID_MESSAGE in reason
        assert "RuntimeError" in reason
        assert caught.value.retry == ()
        assert len(recorder.requests) == 2


EXIT_AFTER_A_FLUSH = """
    import os
    import instrumentor
    from instrumentor import bound_context, track
    from instrumentor.transports import AccoilTransport
    from tests.plan import Events
    instrumentor.configure(
        transports=[AccoilTransport("sk_test", endpoint=os.environ["SINK_URL"], timeout=30)]
    )
    for round in ("a", "b"):
        for user in range(6):
            with bound_context(user_id=f"u_{round}{user}", account_id="acc_1"):
                track(Events.PLAN_UPGRADED)
        if round == "a":
            instrumentor.flush(10)  # the sender threads exist from here on
"""


def test_the_exit_flush_delivers_through_running_sender_threads(server: FaultServer) -> None:
    """Sender threads started before exit still serve the exit flush; everything arrives."""
    result = run_python(code=EXIT_AFTER_A_FLUSH, SINK_URL=server.url)
    assert result.returncode == 0, result.stderr
    tracks = [r for r in server.received() if r.path == "/v2/track"]
    assert sorted(r.json["userId"] for r in tracks) == sorted(
        f"u_{r}{u}" for r in ("a", "b") for u in range(6)
    )
