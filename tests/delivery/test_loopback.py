"""Delivery end to end against a real HTTP server on loopback that injects faults.

Every test sends through a real transport and destination to :class:`FaultServer` and proves
the same three things: no message lost, none duplicated (the server counts only requests it
answered 2xx), and the caller never waited on the network.
"""

from __future__ import annotations

import time
from typing import Any

import instrumentor
from instrumentor import bind_context, bound_context, configure, track
from instrumentor.delivery import Destination, RetryPolicy
from instrumentor.transports import AccoilTransport, MemoryTransport, SegmentTransport
from tests.fault_server import FaultServer
from tests.plan import Events

FAST = RetryPolicy(max_attempts=1000, max_elapsed=30, base_delay=0.02, max_delay=0.1)
KEY = "sk_test_loopback"


def send_through(transport: Any, events: int = 30, **options: Any) -> tuple[list[str], float]:
    """Track ``events`` events for a few users; return the message ids and the slowest call."""
    sent, slowest, _ = send_recorded(transport, events, **options)
    return sent, slowest


def send_recorded(
    transport: Any, events: int = 30, **options: Any
) -> tuple[list[str], float, MemoryTransport]:
    """Like send_through, also returning the memory copy of what was sent."""
    memory = MemoryTransport()  # inline: sees the very message objects the destination sends
    destination = Destination(transport, linger=0.01, retry=options.pop("retry", FAST), **options)
    configure(transports=[memory, destination])
    slowest = 0.0
    for i in range(events):
        with bound_context(user_id=f"u_{i % 3}", account_id="acc_1", project_id="proj_1"):
            started = time.perf_counter()
            track(Events.REPORT_CREATED, properties={"n": i})
            slowest = max(slowest, time.perf_counter() - started)
    return [m.message_id for m in memory.messages], slowest, memory


def delivered_all(server: FaultServer, sent: list[str], timeout: float = 15) -> None:
    assert server.wait_for(len(sent), timeout), (len(server.message_ids()), len(sent))
    instrumentor.flush(5)
    ids = server.message_ids()
    assert sorted(ids) == sorted(sent), "lost or duplicated messages"


def segment(server: FaultServer) -> SegmentTransport:
    return SegmentTransport(KEY, endpoint=server.url, timeout=2.0)


class TestSegmentFaults:
    def test_healthy_provider(self, server: FaultServer) -> None:
        """Everything arrives once, batched."""
        sent, _ = send_through(segment(server))
        delivered_all(server, sent)
        assert len(server.requests()) < len(sent)  # batched, not one request per message

    def test_server_errors_are_retried(self, server: FaultServer) -> None:
        """Three 500s and a 503 in a row, then success."""
        server.fail_next(3, 500)
        server.fail_next(1, 503)
        sent, slowest = send_through(segment(server))
        delivered_all(server, sent)
        assert slowest < 0.5  # the caller never waited on a retry

    def test_429_with_retry_after_pauses_then_delivers(self, server: FaultServer) -> None:
        """A 429 asks for a second's pause; the destination waits, then delivers in order."""
        server.fail_next(1, 429, retry_after="1")
        started = time.monotonic()
        sent, _ = send_through(segment(server), events=3)
        delivered_all(server, sent)
        assert time.monotonic() - started >= 0.9
        refused = [r for r in server.requests() if r.status == 429]
        assert len(refused) == 1
        assert refused[0].index == 0

    def test_slow_answers(self, server: FaultServer) -> None:
        """Slow answers delay delivery, never the caller."""
        server.delay_next(2, 0.5)
        sent, slowest = send_through(segment(server))
        delivered_all(server, sent)
        assert slowest < 0.25

    def test_refused_connections_for_a_while(self, server: FaultServer) -> None:
        """The provider is unreachable for a second; everything arrives once it is back."""
        server.refuse_for(1.0)
        sent, slowest = send_through(segment(server))
        delivered_all(server, sent)
        assert slowest < 0.25

    def test_dropped_connections(self, server: FaultServer) -> None:
        """Connections closed without an answer are retried; nothing is lost."""
        server.drop_next(2)
        sent, _ = send_through(segment(server))
        delivered_all(server, sent)

    def test_413_splits_and_drops_only_the_message_too_large_alone(
        self, server: FaultServer
    ) -> None:
        """Bodies over the provider's limit are split; a message too large alone is dropped."""
        server.reject_larger_than(3000)
        memory = MemoryTransport()
        destination = Destination(segment(server), linger=0.05, retry=FAST)
        configure(transports=[memory, destination], bundle_ttl=0)
        bind_context(user_id="u_1", account_id="acc_1", project_id="proj_1")
        for i in range(20):
            track(Events.REPORT_CREATED, properties={"n": i})
        track(Events.REPORT_CREATED, properties={"blob": "x" * 5000})
        destination.flush(10)
        huge = [m.message_id for m in memory.tracks if "blob" in m.properties]
        expected = sorted(m.message_id for m in memory.messages if m.message_id not in huge)
        assert sorted(server.message_ids()) == expected
        assert destination.stats().dropped == {"too_large": 1}


class TestAccoil:
    def test_v2_delivers_every_message_once_per_user_in_order(self, server: FaultServer) -> None:
        """With faults in the way, each user's calls still arrive in the order made."""
        server.set_status(202)
        server.fail_next(2, 502)
        server.drop_next(1)
        transport = AccoilTransport(KEY, endpoint=server.url, max_in_flight=4, timeout=2.0)
        sent, _, memory = send_recorded(transport, events=24)
        delivered_all(server, sent)
        received: dict[str, list[str]] = {}
        for request in server.received():
            if request.path == "/v2/track":
                received.setdefault(request.json["userId"], []).append(request.message_ids[0])
        made: dict[str, list[str]] = {}
        for message in memory.tracks:
            made.setdefault(message.user_id, []).append(message.message_id)
        assert received == made
        assert all(r.headers.get("authorization") == f"Basic {KEY}" for r in server.received())

    def test_flush_and_shutdown_return_within_their_timeout(self, server: FaultServer) -> None:
        """Against a provider that never answers, both return on time and report pending."""
        server.hang_next(100)
        transport = AccoilTransport(KEY, endpoint=server.url, timeout=30.0)
        _, slowest = send_through(transport, events=5)
        assert slowest < 0.25
        started = time.monotonic()
        flushed = instrumentor.flush(0.5)
        shut = instrumentor.shutdown(0.5)
        assert time.monotonic() - started < 2.0
        assert flushed.pending > 0
        assert shut.pending > 0
        assert shut.delivered == 0
