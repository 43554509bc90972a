"""The outbox strategy when things go wrong: outages, poison, locks, replaced files, leases.

Real SQLite files, the loopback fault server and, where it matters, real processes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import instrumentor
from instrumentor import bound_context, configure, track
from instrumentor.delivery import OutboxDestination, RetryPolicy, outbox_status, purge
from instrumentor.delivery._outbox import OutboxStore
from instrumentor.transports import MemoryTransport, SegmentTransport
from tests.delivery.support import FAST, Recording, messages, outbox, send, stored, wait_until
from tests.fault_server import FaultServer
from tests.plan import Events
from tests.support import connect_sqlite


class TestOutages:
    def test_an_outage_never_kills_rows(self, server: FaultServer, path: str) -> None:
        """Failures of whole batches are the provider's: rows wait, whatever max_attempts says."""
        server.set_status(503)
        policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
        transport = SegmentTransport("k", endpoint=server.url, timeout=2)
        destination = OutboxDestination(transport, path=path, linger=0.01, retry=policy)
        memory = MemoryTransport()
        configure(transports=[memory, destination])
        for n in range(5):
            with bound_context(user_id=f"u_{n}", account_id="acc_1"):
                track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: destination.stats().retried >= 30)
        assert outbox_status(path).dead == {}
        server.set_status(200)
        assert instrumentor.flush(15).pending == 0
        assert sorted(server.message_ids()) == sorted(m.message_id for m in memory.messages)

    def test_a_poison_message_is_isolated_and_set_aside_while_the_rest_flows(
        self, path: str
    ) -> None:
        """One message that always fails does not hold up its channel, and ends up dead."""
        stored(path, "poisoned", messages(200))
        policy = RetryPolicy(max_attempts=3, max_elapsed=1.0, base_delay=0.01, max_delay=0.05)
        poisoned = Recording(poison=0)
        destination = OutboxDestination(
            poisoned, path=path, channel="poisoned", linger=0.01, batch_size=10, retry=policy
        )
        assert wait_until(lambda: len(set(poisoned.delivered)) == 199)
        assert wait_until(lambda: outbox_status(path).dead == {"poisoned": 1})
        # The row count is refreshed by the deliverer after it sets the row aside: wait for it.
        assert wait_until(
            lambda: (destination.stats().failed, destination.stats().outbox_rows) == (1, 0)
        )
        assert poisoned.calls < 100, f"{poisoned.calls} attempts: a hot loop"
        assert destination.flush(1).pending == 0  # a dead row is not waited for
        destination.shutdown(1)
        assert purge(path, dead_only=True) == 1
        assert outbox_status(path).dead == {}

    def test_copies_in_a_partial_delivery_error_are_matched_by_id(self, path: str) -> None:
        """A transport that lists copies of the messages to retry: nothing counts as delivered."""
        stored(path, "copying", messages(10))
        copying = Recording(copies=True)
        destination = OutboxDestination(
            copying, path=path, channel="copying", linger=0.01, retry=FAST
        )
        assert wait_until(lambda: copying.calls >= 3)
        stats = destination.stats()
        assert (stats.delivered, stats.failed) == (0, 0)
        assert outbox_status(path).pending == 10
        destination.shutdown(0.5)


HOLD_THE_LOCK = """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()  # until the test says so
    conn.execute("COMMIT")
"""


class TestFileProblems:
    def test_a_lock_held_at_open_is_waited_out_not_given_up(
        self, server: FaultServer, path: str
    ) -> None:
        """Another process holds the write lock: configure() does not block, events wait in memory
        and reach the file (and the provider) once the lock is gone."""
        OutboxStore(path).open()
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_THE_LOCK.replace("\n    ", "\n"), path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            transport = SegmentTransport("k", endpoint=server.url, timeout=2)
            destination = OutboxDestination(transport, path=path, linger=0.01)
            assert destination.strategy.problem is None
            memory = MemoryTransport()
            configure(transports=[memory, destination])
            with bound_context(user_id="u", account_id="acc_1"):
                track(Events.PLAN_UPGRADED)
            assert destination.stats().persisted == 0
        finally:
            holder.communicate(input="\n", timeout=10)  # commit: the lock is gone
        assert instrumentor.flush(15).pending == 0
        assert destination.stats().persisted == len(memory.messages) == 3
        assert sorted(server.message_ids()) == sorted(m.message_id for m in memory.messages)
        with connect_sqlite(path) as conn:
            indexes = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
            ]
        assert "outbox_leased" in indexes  # the open-time lease scan reads only leased rows

    def test_a_deleted_file_is_noticed_reported_and_recreated(
        self, server: FaultServer, path: str
    ) -> None:
        """A file deleted under the process is noticed, reported and created again."""
        server.set_status(503)  # rows stay in the file
        incidents: list[instrumentor.Incident] = []
        transport = SegmentTransport("k", endpoint=server.url, timeout=2)
        destination = OutboxDestination(transport, path=path, linger=0.01, retry=FAST)
        configure(transports=[destination], on_error=incidents.append)
        with bound_context(user_id="u", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: destination.stats().persisted == 3)
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
        assert wait_until(lambda: any("deleted or replaced" in i.message for i in incidents))
        assert Path(path).exists()
        with bound_context(user_id="u2", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: outbox_status(path).pending >= 3)  # in the new file

    def test_a_disk_that_fills_up_later_falls_back_to_memory(
        self, server: FaultServer, path: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Writes that fail are delivered from memory, reported, and retried with the next batch."""
        destination = outbox(server, path)
        store = destination.strategy.writer  # the committer's connection
        ((pages,),) = store.execute("PRAGMA page_count")
        store.execute(f"PRAGMA max_page_count = {pages}")  # database or disk is full
        with caplog.at_level(logging.WARNING, logger="instrumentor"):
            sent = send(20, destination)
            assert instrumentor.flush(10).pending == 0
        assert sorted(server.message_ids()) == sorted(sent)
        assert instrumentor.stats()["outbox_error"] >= 1
        assert "free space" in caplog.text
        assert destination.stats().persisted == 0
        store.execute("PRAGMA max_page_count = 1073741823")
        more = send(2, destination)
        assert instrumentor.flush(10).pending == 0
        assert destination.stats().persisted == len(more)


class TestLeases:
    def test_a_second_destination_in_the_process_leaves_live_leases_alone(self, path: str) -> None:
        """A new destination on the same file and channel must not re-deliver rows in flight."""
        stored(path, "shared", messages(10))
        slow, quick = Recording(delay=1.0), Recording()
        first = OutboxDestination(slow, path=path, channel="shared", linger=0.01)
        assert wait_until(lambda: slow.calls >= 1)  # the ten rows are leased, in a slow attempt
        second = OutboxDestination(quick, path=path, channel="shared", linger=0.01)
        first.flush(10)
        second.flush(10)
        both = Counter(slow.delivered + quick.delivered)
        assert len(both) == 10
        assert max(both.values()) == 1, "a row was delivered twice"
        first.shutdown(1)
        second.shutdown(1)

    def test_the_lease_is_renewed_while_a_long_attempt_runs(self, path: str) -> None:
        """Another claimer gets nothing while the attempt outlasts the lease several times."""
        stored(path, "c", messages(5))
        slow = Recording(delay=2.0)
        destination = OutboxDestination(slow, path=path, channel="c", lease=0.6, linger=0.01)
        other = OutboxStore(path, channel="c", lease=0.6)
        assert wait_until(lambda: slow.calls >= 1)
        claimed = []
        while slow.calls == 1 and not slow.delivered:
            claimed += other.claim(10)  # would succeed once a lease of 0.6 s expired unrenewed
            time.sleep(0.05)
        assert claimed == []
        assert destination.flush(10).pending == 0
        assert len(slow.delivered) == len(set(slow.delivered)) == 5
        destination.shutdown(1)
        other.close()


class TestShutdownDuringADelivery:
    def test_the_transport_is_not_closed_under_a_deliverer_started_late(
        self, tmp_path: Path
    ) -> None:
        """Shutdown never closes the transport while a deliverer started after it is sending."""
        import threading

        from tests.delivery.support import messages

        class Slow:
            def __init__(self) -> None:
                self.busy = threading.Event()
                self.closed_while_busy = False

            def deliver(self, batch: object) -> None:
                self.busy.set()
                time.sleep(0.6)
                self.busy.clear()

            def close(self) -> None:
                self.closed_while_busy = self.closed_while_busy or self.busy.is_set()

        for attempt in range(6):  # the deliverer must start after shutdown looked: a race
            transport = Slow()
            destination = OutboxDestination(
                transport,
                path=tmp_path / f"outbox-{attempt}.db",
                open_now=False,  # as configure() from the environment: the worker opens it
                linger=0.01,
            )
            emission = type("E", (), {"messages": messages(1)})()
            destination(None, emission=emission)
            destination.shutdown(timeout=0.2)
            time.sleep(0.8)  # the request ends; it must not have been cut by close()
            assert not transport.closed_while_busy, f"closed mid-request on attempt {attempt}"
