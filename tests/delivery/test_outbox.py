"""The outbox strategy end to end: delivery, bounds, configuration and channels.

Real SQLite files and the loopback fault server. Failures (outages, poison, locks, replaced
files, full disks, leases) are in ``test_outbox_failures.py``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

import instrumentor
import instrumentor.transports
from instrumentor import ConfigurationError, bound_context, configure, track
from instrumentor._messages import Message
from instrumentor._wiring import Settings
from instrumentor.delivery import (
    Destination,
    OutboxDestination,
    OutboxStrategy,
    drain,
    outbox_status,
)
from instrumentor.delivery._outbox import OutboxStore
from instrumentor.transports import MemoryTransport, SegmentTransport
from tests.delivery.support import Recording, messages, outbox, send, stored, wait_until
from tests.fault_server import FaultServer
from tests.plan import Events
from tests.support import connect_sqlite


def rows_in(path: str) -> int:
    with connect_sqlite(path) as conn:
        count: int = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return count


def test_everything_is_delivered_once_and_the_outbox_empties(
    server: FaultServer, path: str
) -> None:
    """Every message arrives once, is counted persisted and delivered, and the file empties."""
    destination = outbox(server, path)
    sent = send(30, destination)
    result = instrumentor.flush(10)
    assert (result.pending, result.in_outbox) == (0, 0)
    assert sorted(server.message_ids()) == sorted(sent)
    stats = destination.stats()
    assert (stats.persisted, stats.delivered, stats.outbox_rows) == (len(sent), len(sent), 0)
    assert instrumentor.stats()["persisted"] >= len(sent)  # totals over the process's history
    assert rows_in(path) == 0


def test_rows_stay_in_the_outbox_until_the_provider_accepts_them(
    server: FaultServer, path: str
) -> None:
    """During an outage flush returns with everything persisted; after it, all arrive once."""
    server.set_status(503)
    destination = outbox(server, path)
    sent = send(20, destination)
    result = instrumentor.flush(0.5)
    assert result.pending == result.in_outbox == len(sent)  # nothing only in memory
    assert rows_in(path) == len(sent)
    assert outbox_status(path).last_error is not None
    assert server.message_ids() == []
    server.set_status(200)
    assert instrumentor.flush(15).pending == 0
    assert sorted(server.message_ids()) == sorted(sent)
    assert destination.stats().retried > 0
    assert rows_in(path) == 0


def test_a_refused_batch_is_deleted_and_counted_failed(server: FaultServer, path: str) -> None:
    """A 4xx deletes the batch's rows and counts them failed (a delivery_failed incident)."""
    server.set_status(400)
    destination = outbox(server, path)
    sent = send(5, destination)
    result = instrumentor.flush(10)
    assert (result.failed, result.pending) == (len(sent), 0)
    assert instrumentor.stats()["delivery_failed"] >= 1
    assert destination.stats().failed == len(sent)
    assert rows_in(path) == 0


def test_a_message_too_large_alone_is_deleted_and_dropped(server: FaultServer, path: str) -> None:
    """A message too large even alone is deleted and counted dropped.too_large; the rest arrive."""
    server.reject_larger_than(1500)  # a batch of several is split; a single one is too large
    destination = outbox(server, path)
    memory = MemoryTransport()
    configure(transports=[memory, destination])
    with bound_context(user_id="u_1", account_id="acc_1", project_id="proj_1"):
        track(Events.REPORT_CREATED, properties={"blob": "x" * 2000})
    instrumentor.flush(10)
    stats = destination.stats()
    tracks = [m.message_id for m in memory.tracks]
    assert stats.dropped == {"too_large": 1}
    assert tracks[0] not in server.message_ids()
    assert len(server.message_ids()) == len(memory.messages) - 1
    assert rows_in(path) == 0


def test_a_new_destination_delivers_what_an_earlier_process_left(
    server: FaultServer, path: str
) -> None:
    """Rows already in the file are delivered at start, before any event is tracked."""
    left = send(4, MemoryTransport())
    destination = outbox(server, path, open_now=False)
    store = OutboxStore(path, channel=destination.strategy.channel)
    messages: list[Message] = list(instrumentor._wiring.runtime().receivers[0].transport.messages)
    assert store.persist(messages) == (len(left), [])
    store.close()
    destination = outbox(server, path)
    assert destination.flush(10).pending == 0
    assert sorted(server.message_ids()) == sorted(left)


def test_the_outbox_is_bounded_and_counts_what_it_refuses(server: FaultServer, path: str) -> None:
    """Beyond max_rows new messages are refused and counted (dropped.outbox_full, one incident)."""
    server.set_status(503)
    destination = outbox(server, path, max_rows=5)
    sent = send(4, destination)  # identify + 3 groups + 4 tracks = more than 5 messages
    instrumentor.flush(0.5)
    stats = destination.stats()
    assert rows_in(path) == 5
    assert stats.dropped["outbox_full"] == len(sent) - 5
    assert instrumentor.stats()["delivery_dropped"] == 1  # the first drop is an incident


def test_flush_waits_at_least_until_everything_is_persisted(server: FaultServer, path: str) -> None:
    """With a long linger and a hung provider, flush still commits the queue to the file."""
    server.pause()
    try:
        destination = outbox(server, path, linger=30)
        sent = send(10, destination)
        started = time.monotonic()
        result = destination.flush(1.0)
        assert time.monotonic() - started < 10
        assert result.pending == result.in_outbox == len(sent)
        assert rows_in(path) == len(sent)
    finally:
        server.resume()


class TestConfiguration:
    def test_configure_outbox_puts_default_destinations_behind_it(
        self, server: FaultServer, path: str
    ) -> None:
        """configure(outbox=...) puts the default transport behind the outbox strategy."""
        server.set_status(202)
        configure(api_key="sk_test", endpoint=server.url, outbox=path)
        (destination,) = instrumentor._wiring.destinations()
        outbox = destination.strategy
        assert isinstance(outbox, OutboxStrategy)
        assert outbox.channel.startswith(f"AccoilTransport(v2)@{server.url}#")
        assert "sk_test" not in outbox.channel
        with bound_context(user_id="u_1", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
        assert instrumentor.flush(10).pending == 0
        assert len(server.message_ids()) == 3
        assert destination.stats().persisted == 3

    def test_the_environment_turns_it_on(
        self, server: FaultServer, path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ANALYTICS_OUTBOX (and its options) turn the outbox on at the first event."""
        settings = Settings.from_env(
            {
                "ANALYTICS_OUTBOX": path,
                "ANALYTICS_OUTBOX_MAX_ROWS": "500",
                "ANALYTICS_OUTBOX_SYNCHRONOUS": "FULL",
            }
        )
        assert (settings.outbox, settings.outbox_max_rows, settings.outbox_synchronous) == (
            path,
            500,
            "full",
        )
        server.set_status(202)
        monkeypatch.setenv("ANALYTICS_API_KEY", "sk_env")
        monkeypatch.setenv("ANALYTICS_ENDPOINT", server.url)
        monkeypatch.setenv("ANALYTICS_OUTBOX", path)
        with bound_context(user_id="u_1", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)  # the first event reads the environment
        assert instrumentor.flush(10).pending == 0
        (destination,) = instrumentor._wiring.destinations()
        assert isinstance(destination.strategy, OutboxStrategy)
        assert destination.stats().persisted == 3
        assert len(server.message_ids()) == 3

    @pytest.mark.parametrize(
        "value", [("outbox_synchronous", "sometimes"), ("outbox_max_rows", 0), ("outbox", "")]
    )
    def test_invalid_values_are_refused(self, value: tuple[str, Any]) -> None:
        """Invalid outbox settings are configuration errors naming the setting."""
        with pytest.raises(ConfigurationError, match=value[0]):
            configure(**{value[0]: value[1]})

    def test_an_unusable_path_is_reported_and_memory_is_used(
        self, server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unusable path is one outbox_unavailable incident (no key logged); memory delivers."""
        (tmp_path / "file").write_text("not a directory")
        incidents: list[instrumentor.Incident] = []
        with caplog.at_level(logging.WARNING, logger="instrumentor"):
            configure(
                api_key="sk_secret_key",
                endpoint=server.url,
                outbox=str(tmp_path / "file" / "analytics.db"),
                on_error=incidents.append,
            )
        assert [i.kind for i in incidents] == ["outbox_unavailable"]
        assert "is not a directory" in caplog.text
        assert "memory" in caplog.text
        assert "sk_secret_key" not in caplog.text
        with bound_context(user_id="u_1", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
        assert instrumentor.flush(10).delivered == 3  # delivered from memory

    def test_strict_mode_raises_instead(self, tmp_path: Path) -> None:
        """With strict=True an unusable outbox raises and nothing is installed."""
        with pytest.raises(ConfigurationError, match="does not exist"):
            configure(api_key="sk_test", outbox=str(tmp_path / "missing" / "a.db"), strict=True)
        assert instrumentor.current_settings().outbox is None  # nothing was installed

    def test_a_corrupt_file_found_at_the_first_event_is_reported(
        self, path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A corrupt file met lazily (from the environment) is reported, never raised."""
        Path(path).write_bytes(b"garbage" * 100)
        monkeypatch.setenv("ANALYTICS_API_KEY", "sk_env")
        monkeypatch.setenv("ANALYTICS_ENDPOINT", "http://127.0.0.1:9")
        monkeypatch.setenv("ANALYTICS_OUTBOX", path)
        with bound_context(user_id="u_1", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)  # must not raise; the worker opens the file
        assert wait_until(lambda: instrumentor.stats().get("outbox_unavailable") == 1)

    def test_the_default_lease_follows_the_transport_timeout(self, path: str) -> None:
        """The lease is three transport timeouts, at least 30 s, settled when attached."""
        transport = SegmentTransport("k", endpoint="http://127.0.0.1:9", timeout=25)
        assert OutboxDestination(transport, path=path, open_now=False).strategy.lease == 75
        strategy = OutboxStrategy(path, open_now=False)
        Destination(MemoryTransport(), strategy=strategy)
        assert strategy.lease == 30

    def test_an_outbox_destination_is_a_destination_with_the_outbox_strategy(
        self, path: str
    ) -> None:
        """OutboxDestination(transport, path=...) composes Destination and OutboxStrategy."""
        transport = MemoryTransport()
        destination = OutboxDestination(transport, path=path, channel="c", max_queue=7)
        strategy = destination.strategy
        assert isinstance(strategy, OutboxStrategy)
        assert (strategy.path, strategy.channel, strategy.problem) == (path, "c", None)
        assert (destination.transport, destination.max_queue) == (transport, 7)
        destination.shutdown(1)

    def test_an_outbox_strategy_serves_one_destination(self, path: str) -> None:
        """One OutboxStrategy attached to a second destination is a configuration error."""
        strategy = OutboxStrategy(path, open_now=False)
        Destination(MemoryTransport(), strategy=strategy)
        with pytest.raises(ConfigurationError, match="serves one destination"):
            Destination(MemoryTransport(), strategy=strategy)


class TestChannels:
    def test_the_key_never_reaches_the_file_and_a_new_key_gets_its_own_channel(
        self, server: FaultServer, path: str
    ) -> None:
        """Rows never hold the key; a new key writes a new channel and old rows wait for drain."""
        server.set_status(503)
        configure(api_key="sk_live_SECRET_12345", endpoint=server.url, outbox=path)
        with bound_context(user_id="u", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
        assert instrumentor.flush(0.5).in_outbox == 3
        instrumentor.shutdown(
            1
        )  # reading the file below must not disturb a live connection's locks
        (old,) = outbox_status(path).channels
        raw = b"".join(Path(path + s).read_bytes() for s in ("", "-wal") if Path(path + s).exists())
        assert b"SECRET_12345" not in raw
        server.set_status(202)
        configure(api_key="sk_live_OTHER_67890", endpoint=server.url, outbox=path)
        with bound_context(user_id="u", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
        assert instrumentor.flush(10).pending == 0
        assert outbox_status(path).channels == {old: 3}  # not sent with the new key
        with connect_sqlite(path) as conn:
            waiting = {row[0] for row in conn.execute("SELECT message_id FROM outbox")}
        assert waiting.isdisjoint(server.message_ids())
        old_key = instrumentor.transports.AccoilTransport(
            "sk_live_SECRET_12345", endpoint=server.url
        )
        try:
            result = drain(path, old_key, timeout=10)
        finally:
            old_key.close()
        assert (result.delivered, result.pending) == (3, 0)
        for request in server.received():
            if waiting & set(request.message_ids):
                assert "SECRET_12345" in request.headers["authorization"]

    def test_rows_of_a_channel_nobody_serves_are_reported(self, path: str) -> None:
        """Rows of a channel nobody served recently are reported once (outbox_unserved)."""
        stored(path, "RemovedTransport", messages(4))
        with connect_sqlite(path) as conn:  # last served long ago
            conn.execute("UPDATE outbox_meta SET value = 0 WHERE key = 'seen:RemovedTransport'")
        assert outbox_status(path).unserved == {"RemovedTransport": 4}
        incidents: list[instrumentor.Incident] = []
        destination = OutboxDestination(Recording(), path=path, linger=0.01)
        configure(transports=[destination], on_error=incidents.append)
        with bound_context(user_id="u", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)  # starts the worker, which looks at the file
        assert wait_until(lambda: any(i.kind == "outbox_unserved" for i in incidents))
        (incident,) = [i for i in incidents if i.kind == "outbox_unserved"]
        assert "'RemovedTransport': 4" in incident.message
        destination.shutdown(1)
