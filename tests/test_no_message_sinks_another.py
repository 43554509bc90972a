"""No message can sink another: a value or a message that cannot be encoded stays alone.

An int longer than Python turns into text (5,000 digits) is normalised to a marker and sent
with its batch; a message that still cannot be encoded (here: one built with an int as its user
id, as untyped code could) is dropped alone, counted ``dropped.invalid_message`` and reported as
an ``invalid_message`` incident, while every other message of its batch is delivered. A
properties mapping that cannot be read costs the event its properties, never its identify,
group and track. Real transports, a real SQLite outbox and a loopback provider throughout; the
property test at the end drives a Segment transport on an ``httpx.MockTransport`` for speed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import instrumentor
from instrumentor import Incident, bound_context, configure, current_context, identify, track
from instrumentor.celery import CeleryPublisher, CeleryQueue
from instrumentor.delivery import Destination, OutboxDestination, RetryPolicy
from instrumentor.exceptions import INVALID_MESSAGE, PartialDeliveryError
from instrumentor.signals import Emission
from instrumentor.transports import (
    AccoilTransport,
    ConsoleTransport,
    MemoryTransport,
    Message,
    OTelTransport,
    SegmentTransport,
    TrackMessage,
)
from tests.fault_server import FaultServer
from tests.plan import Events

KEY = "sk_no_message_sinks_another"
FAST = RetryPolicy(max_attempts=3, max_elapsed=10, base_delay=0.01, max_delay=0.05)
HUGE = (10**5000 - 1) // 9 * 7  # 77...7, 5,000 digits: more than Python makes text of (4,300)
MARKER = "<int of 5000 digits>"
CONTEXT = {"user_id": "u_1", "account_id": "acc_1", "project_id": "proj_1"}


# --- hostile values -------------------------------------------------------------------------


class Unprintable:
    """An object whose ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    def __repr__(self) -> str:
        return "Unprintable()"


class RaisingMapping(Mapping[str, Any]):
    """A mapping that cannot be read: iterating it (and so ``items()``) raises."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("no item for you")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no iteration for you")

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return "RaisingMapping()"


class BrokenInt(int):
    """An int subclass whose conversions all raise (``__index__``, ``__int__``, ``__str__``)."""

    def __index__(self) -> int:
        raise RuntimeError("no index for you")

    def __int__(self) -> int:
        raise RuntimeError("no int for you")

    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    def __repr__(self) -> str:
        return "BrokenInt()"


def cyclic_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    value["self"] = value
    return value


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


# --- sending --------------------------------------------------------------------------------


def track_mixed(receiver: Any, *, huge_in: str = "track") -> MemoryTransport:
    """Track good events around one with a 5,000-digit int (in a track, or identify traits).

    A memory transport configured alongside ``receiver`` sees the very messages it is sent.
    """
    memory = MemoryTransport()
    configure(transports=[memory, receiver])
    with bound_context(**CONTEXT):
        for n in range(4):
            track(Events.REPORT_CREATED, properties={"n": n})
        if huge_in == "track":
            track(Events.REPORT_CREATED, properties={"n": "bad", "huge": HUGE})
        else:
            identify(traits={"huge": HUGE})
        for n in range(4, 8):
            track(Events.REPORT_CREATED, properties={"n": n})
    return memory


def delivered_all(server: FaultServer, sent: Sequence[str]) -> None:
    """Every id of ``sent`` reached ``server`` once, and nothing else did."""
    assert server.wait_for(len(sent), 15), (len(server.message_ids()), len(sent))
    instrumentor.flush(5)
    assert sorted(server.message_ids()) == sorted(sent)


def bodies(server: FaultServer) -> list[dict[str, Any]]:
    """Every message the server accepted, as JSON objects (batch items, or single calls)."""
    out: list[dict[str, Any]] = []
    for request in server.received():
        payload = request.json
        out.extend(payload.get("batch", [payload]))
    return out


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def good_tracks(count: int) -> list[TrackMessage]:
    return [
        TrackMessage(
            user_id="u_1",
            event="Report_Created",
            group_id="proj_1",
            group_type="project",
            category="core_value",
            properties={"n": n},
            timestamp=now(),
        )
        for n in range(count)
    ]


def unencodable() -> TrackMessage:
    """A track JSON cannot encode: its user id is an int of 5,000 digits (untyped code)."""
    user_id: Any = HUGE
    return dataclasses.replace(good_tracks(1)[0], user_id=user_id)


def unreadable() -> TrackMessage:
    """A track whose properties mapping cannot be read (built directly, not normalised)."""
    return dataclasses.replace(good_tracks(1)[0], properties=RaisingMapping())


def emit(receiver: Callable[..., None], messages: Sequence[Message]) -> None:
    """Hand ``messages`` to ``receiver`` as one emission, as the signal does."""
    emission = Emission(
        None,
        "u_1",
        None,
        time.time(),
        current_context(),
        None,
        (False, ("account",)),
        tuple(messages),
    )
    receiver(None, emission=emission)


def rows_in(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        count: int = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()
    return count


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(status=200) as running:
        yield running
    instrumentor.shutdown(1.0)


def segment(server: FaultServer) -> SegmentTransport:
    return SegmentTransport(KEY, endpoint=server.url, timeout=2.0)


def accoil(server: FaultServer) -> AccoilTransport:
    return AccoilTransport(KEY, endpoint=server.url, timeout=2.0)


# --- a 5,000-digit int: sent as a marker, with its batch ------------------------------------


def test_a_huge_int_goes_out_as_a_marker_with_its_batch_from_memory(server: FaultServer) -> None:
    """Through the memory queue and Segment: the whole batch arrives, the int as its marker."""
    destination = Destination(segment(server), linger=0.01, retry=FAST)
    memory = track_mixed(destination)
    delivered_all(server, [m.message_id for m in memory.messages])
    huge = [b for b in bodies(server) if b.get("properties", {}).get("n") == "bad"]
    assert [b["properties"]["huge"] for b in huge] == [MARKER]
    assert destination.stats().failed == 0


def test_a_huge_int_goes_out_as_a_marker_with_its_batch_through_the_outbox(
    server: FaultServer, tmp_path: Path
) -> None:
    """Through a real SQLite outbox: committed, delivered, and the file empties."""
    path = tmp_path / "analytics.db"
    destination = OutboxDestination(segment(server), path=path, linger=0.01, retry=FAST)
    memory = track_mixed(destination)
    sent = [m.message_id for m in memory.messages]
    delivered_all(server, sent)
    assert destination.stats().persisted == len(sent)
    assert rows_in(path) == 0
    assert MARKER in json.dumps(bodies(server))


def test_a_huge_int_in_identify_traits_goes_out_as_a_marker_through_accoil(
    server: FaultServer,
) -> None:
    """Accoil sends one request per message: the identify with the marker, and all the rest."""
    memory = track_mixed(Destination(accoil(server), linger=0.01, retry=FAST), huge_in="identify")
    delivered_all(server, [m.message_id for m in memory.messages])
    traits = [b["traits"] for b in bodies(server) if "huge" in b.get("traits", {})]
    assert traits == [{"huge": MARKER}]


# --- a message that cannot be encoded: dropped alone -------------------------------------------


def configured_with(destination: Destination) -> list[Incident]:
    incidents: list[Incident] = []
    configure(transports=[destination], on_error=incidents.append)
    return incidents


def dropped_alone(
    server: FaultServer,
    destination: Destination,
    incidents: list[Incident],
    good: Sequence[Message],
    error: str = "ValueError",
) -> None:
    """``good`` arrived; the one bad message was counted dropped.invalid_message and reported."""
    delivered_all(server, [m.message_id for m in good])
    stats = destination.stats()
    assert (stats.dropped, stats.failed, stats.delivered) == ({"invalid_message": 1}, 0, len(good))
    totals = instrumentor.stats()
    assert totals.get("dropped.invalid_message", 0) >= 1  # summed over the process's history
    assert totals.get("invalid_message") == 1
    kinds = [i.kind for i in incidents]
    assert kinds.count("invalid_message") == 1
    assert "delivery_failed" not in kinds
    message = next(i.message for i in incidents if i.kind == "invalid_message")
    assert INVALID_MESSAGE in message
    assert error in message


@pytest.mark.parametrize(
    ("make", "bad", "error"),
    [
        (segment, unencodable, "ValueError"),
        (segment, unreadable, "RuntimeError"),
        (accoil, unreadable, "RuntimeError"),
    ],
    ids=["segment-huge-user-id", "segment-unreadable-properties", "accoil-unreadable-properties"],
)
def test_a_message_that_cannot_be_encoded_is_dropped_alone_from_memory(
    server: FaultServer,
    make: Callable[[FaultServer], Any],
    bad: Callable[[], Message],
    error: str,
) -> None:
    """One batch, one bad message in the middle: the others are delivered, it is dropped."""
    destination = Destination(make(server), linger=0.01, retry=FAST)
    incidents = configured_with(destination)
    good = good_tracks(6)
    emit(destination, [*good[:3], bad(), *good[3:]])
    dropped_alone(server, destination, incidents, good, error)


def test_a_message_that_cannot_be_stored_is_dropped_alone_by_the_outbox(
    server: FaultServer, tmp_path: Path
) -> None:
    """The committer leaves it out of the file (and lives on); the rest is stored, delivered."""
    path = tmp_path / "analytics.db"
    destination = OutboxDestination(segment(server), path=path, linger=0.01, retry=FAST)
    incidents = configured_with(destination)
    good = good_tracks(6)
    emit(destination, [*good[:3], unencodable(), *good[3:]])
    dropped_alone(server, destination, incidents, good)
    assert destination.stats().persisted == len(good)
    assert rows_in(path) == 0
    later = good_tracks(2)  # the committer still works
    emit(destination, later)
    delivered_all(server, [m.message_id for m in good + later])


def test_the_console_prints_every_message_it_can() -> None:
    """One message that cannot be printed is refused alone, after the others are printed."""
    stream = io.StringIO()
    good = good_tracks(2)
    bad = unencodable()
    with pytest.raises(PartialDeliveryError) as caught:
        ConsoleTransport(stream).deliver([good[0], bad, good[1]])
    assert [m for m, _ in caught.value.failed] == [bad]
    assert INVALID_MESSAGE in caught.value.failed[0][1]
    assert caught.value.retry == ()
    assert [line.count('"n":') for line in stream.getvalue().splitlines()] == [1, 1]


class Recorder(logging.Handler):
    """A logging handler that keeps the records."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_otel_emits_every_message_it_can_and_ints_beyond_64_bits_as_text() -> None:
    """A message whose attributes cannot be made is refused alone; a 2**70 becomes a string."""
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("tests.no_message_sinks_another.otel")
    handler = Recorder(records)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        big = dataclasses.replace(good_tracks(1)[0], properties={"big": 2**70, "ok": 5})
        bad = unreadable()
        with pytest.raises(PartialDeliveryError) as caught:
            OTelTransport(mode="log", logger=logger).deliver([big, bad, *good_tracks(1)])
    finally:
        logger.removeHandler(handler)
    assert [m for m, _ in caught.value.failed] == [bad]
    assert INVALID_MESSAGE in caught.value.failed[0][1]
    assert len(records) == 2
    assert getattr(records[0], "instrumentor.properties.big") == str(2**70)
    assert getattr(records[0], "instrumentor.properties.ok") == 5


def test_celery_publishes_every_message_it_can() -> None:
    """A message JSON cannot encode is refused alone; the others are published as one task."""
    app = Celery("no_sink", broker="memory://", set_as_current=False)
    queue = CeleryQueue(app, propagate_context=False)
    publisher = CeleryPublisher(queue, "default")
    good = good_tracks(3)
    bad = unencodable()
    try:
        with pytest.raises(PartialDeliveryError) as caught:
            publisher.deliver([good[0], bad, *good[1:]])
        with app.connection_for_write() as connection:
            waiting = connection.SimpleQueue(queue.queue, no_ack=True)
            task = waiting.get(timeout=5)
            waiting.close()
    finally:
        publisher.close()
    assert [m for m, _ in caught.value.failed] == [bad]
    assert INVALID_MESSAGE in caught.value.failed[0][1]
    assert caught.value.retry == ()
    route, payload = task.decode()[0]
    assert (route, [item["message_id"] for item in payload]) == (
        "default",
        [m.message_id for m in good],
    )


# --- a properties mapping that cannot be read --------------------------------------------------


def test_a_mapping_that_raises_costs_the_event_its_properties_only(server: FaultServer) -> None:
    """Identify, group and track still go out; an invalid_properties incident says why."""
    destination = Destination(segment(server), linger=0.01, retry=FAST)
    incidents: list[Incident] = []
    memory = MemoryTransport()
    configure(transports=[memory, destination], on_error=incidents.append)
    with bound_context(**CONTEXT):
        track(Events.REPORT_CREATED, properties=RaisingMapping())
    sent = memory.messages
    assert sorted(m.type for m in sent) == ["group", "group", "identify", "track"]
    delivered_all(server, [m.message_id for m in sent])
    assert [b.get("properties") for b in bodies(server) if b["type"] == "track"] == [{}]
    assert [i.kind for i in incidents] == ["invalid_properties"]
    assert "RuntimeError" in incidents[0].message
    assert isinstance(incidents[0].error, RuntimeError)


def test_a_dict_another_thread_changes_never_loses_the_event() -> None:
    """Tracking a dict while another thread changes it: every track is still sent.

    Before, the "dictionary changed size during iteration" error escaped the normalisation and
    the event was lost (an internal_error); a short switch interval makes that likely.
    """
    memory = MemoryTransport()
    configure(transports=[memory])
    shared: dict[str, Any] = {f"k{n}": n for n in range(200)}
    stop = threading.Event()

    def mutate() -> None:
        while not stop.is_set():  # each sleep(0) lets the tracking thread run mid-change
            shared["extra"] = 1
            time.sleep(0)
            del shared["extra"]
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=mutate, daemon=True)
    thread.start()
    try:
        with bound_context(**CONTEXT):
            for _ in range(300):
                track(Events.REPORT_CREATED, properties=shared)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert len(memory.tracks) == 300
    assert instrumentor.stats().get("internal_error", 0) == 0


# --- the property: hostile values never sink good events ----------------------------------------

huge_ints = st.builds(
    lambda digits, sign: sign * 10 ** (digits - 1),
    st.integers(4301, 6000),
    st.sampled_from([1, -1]),
)
scalars = st.one_of(
    huge_ints,
    st.sampled_from([math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("-Infinity")]),
    st.integers(0xD800, 0xDFFF).map(lambda c: f"a{chr(c)}b"),  # a lone surrogate
    st.binary(max_size=8),
    st.integers(33, 120).map(nested),
    st.builds(cyclic_list),
    st.builds(cyclic_dict),
    st.builds(Unprintable),
    st.builds(RaisingMapping),
    st.builds(BrokenInt, st.integers()),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
)
keys = st.one_of(st.text(max_size=4), huge_ints, st.builds(BrokenInt, st.integers()))
hostile = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3),
        st.frozensets(st.one_of(huge_ints, st.integers()), max_size=3),
    ),
    max_leaves=6,
)
#: What one event is tracked with: ``None`` for a good event, else hostile properties.
events = st.lists(
    st.one_of(
        st.none(),
        hostile.map(lambda value: {"bad": value}),
        st.builds(RaisingMapping),
        st.just([1, 2, 3]),  # not a mapping at all
    ),
    min_size=1,
    max_size=8,
)


class Provider:
    """An ``httpx`` handler standing in for the Segment API: records every messageId, 200s."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.read())
        with self.lock:
            self.ids.extend(item["messageId"] for item in payload["batch"])
        return httpx.Response(200, json={"success": True})


@settings(  # each example resets the configuration itself (the autouse fixture runs once)
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events)
def test_hostile_values_never_sink_good_events(tracked: list[Any]) -> None:
    """Whatever the other events hold, every good event is delivered, and nothing is lost.

    Each message is either delivered (hostile values normalised) or dropped alone, counted as
    ``dropped.invalid_message``; nothing is retried, failed or delivered twice.
    """
    instrumentor.reset_configuration()
    provider = Provider()
    transport = SegmentTransport(KEY, http_transport=httpx.MockTransport(provider))
    destination = Destination(transport, linger=0.01, retry=FAST)
    memory = MemoryTransport()
    configure(transports=[memory, destination])
    try:
        with bound_context(**CONTEXT):
            for n, properties in enumerate(tracked):
                good = {"n": n, "good": True}
                track(Events.REPORT_CREATED, properties=good if properties is None else properties)
        instrumentor.flush(10)
    finally:
        destination.shutdown(5)
        instrumentor.reset_configuration()
    good_ids = {m.message_id for m in memory.tracks if m.properties.get("good")}
    assert len(good_ids) == sum(1 for properties in tracked if properties is None)
    assert good_ids <= set(provider.ids)
    stats = destination.stats()
    assert len(provider.ids) == len(set(provider.ids)) == stats.delivered
    lost = {m.message_id for m in memory.messages} - set(provider.ids)
    assert len(lost) == stats.dropped.get("invalid_message", 0)
    assert (stats.failed, stats.retried) == (0, 0)
