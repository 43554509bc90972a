"""The outbox's hard cases: slow attempts, leases, poison messages, locks, replaced files, keys.

Real SQLite files, the loopback fault server and, where it matters, real processes.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import instrumentor
import instrumentor.transports
from instrumentor import bound_context, configure, track
from instrumentor._messages import Message, TrackMessage
from instrumentor.delivery import OutboxDestination, RetryPolicy, drain, outbox_status, purge
from instrumentor.delivery._attempt import attempt
from instrumentor.delivery._outbox import OutboxError, OutboxStore
from instrumentor.delivery._outbox_owner import new_owner, owner_is_dead
from instrumentor.exceptions import PartialDeliveryError, RetryableDeliveryError
from instrumentor.transports import MemoryTransport, SegmentTransport
from tests.fault_server import FaultServer
from tests.plan import Events
from tests.support import ROOT, connect_sqlite

FAST = RetryPolicy(base_delay=0.02, max_delay=0.1)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def messages(count: int, start: int = 0) -> list[Message]:
    return [
        TrackMessage(
            user_id="u_1",
            event="Report_Created",
            group_id="proj_1",
            group_type="project",
            category="core_value",
            properties={"n": n},
            timestamp=dt.datetime.now(dt.timezone.utc),
            context={},
        )
        for n in range(start, start + count)
    ]


def stored(path: str, channel: str, batch: Sequence[Message]) -> None:
    store = OutboxStore(path, channel=channel)
    assert store.persist(batch) == (len(batch), [])
    store.close()


class Recording:
    """A transport that records every message id it delivers, optionally slowly or failing."""

    def __init__(
        self, *, delay: float = 0.0, poison: int | None = None, copies: bool = False
    ) -> None:
        self.delay, self.poison, self.copies = delay, poison, copies
        self.delivered: list[str] = []
        self.calls = 0

    def deliver(self, batch: Sequence[Message]) -> None:
        self.calls += 1
        time.sleep(self.delay)
        if self.copies:
            raise PartialDeliveryError("0 accepted", retry=[copy.copy(m) for m in batch], failed=[])
        if any(getattr(m, "properties", {}).get("n") == self.poison for m in batch):
            raise RetryableDeliveryError("POST /v1/batch answered 500")
        self.delivered.extend(m.message_id for m in batch)

    def close(self) -> None:
        pass


# --- P0: loss and double delivery -----------------------------------------------------------

EXIT_DURING_A_SLOW_DELIVERY = """
    import os, sys
    import instrumentor
    from instrumentor.delivery import OutboxDestination
    from instrumentor.transports import MemoryTransport, SegmentTransport
    from instrumentor import bound_context, track
    from tests.plan import Events
    from tests.fault_server import FaultServer
    transport = SegmentTransport("k", endpoint=os.environ["SINK_URL"], timeout=30)
    destination = OutboxDestination(transport, path=os.environ["OUTBOX"], linger=0.01)
    memory = MemoryTransport()
    instrumentor.configure(transports=[memory, destination], exit_timeout=1)
    with bound_context(user_id="u", account_id="acc_1"):
        track(Events.PLAN_UPGRADED)  # its batch is now in a request the server holds
        import time
        deadline = time.monotonic() + 20
        while not os.path.exists(os.environ["STARTED"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        for n in range(20):
            track(Events.PLAN_UPGRADED, properties={"n": n})
    print(" ".join(m.message_id for m in memory.messages), flush=True)
"""


def test_a_normal_exit_during_a_slow_delivery_commits_the_queue(
    server: FaultServer, path: str, tmp_path: Path
) -> None:
    """The queue reaches the file while the deliverer sits in one long request."""
    server.hang_next(1)
    started = tmp_path / "started"
    child = subprocess.Popen(
        [sys.executable, "-c", EXIT_DURING_A_SLOW_DELIVERY.replace("\n    ", "\n")],
        cwd=ROOT,
        env={**os.environ, "SINK_URL": server.url, "OUTBOX": path, "STARTED": str(started)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.wait_for_requests(1, 20), "the first delivery never started"
    started.touch()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    tracked = out.split()
    with connect_sqlite(path) as conn:
        in_file = {row[0] for row in conn.execute("SELECT message_id FROM outbox")}
    assert len(tracked) == 3 + 20
    assert set(tracked) <= in_file | set(server.message_ids()), "queued events were lost"


def test_a_second_destination_in_the_process_leaves_live_leases_alone(path: str) -> None:
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


class TestOwners:
    def test_this_process_and_live_processes_are_not_dead(self) -> None:
        assert not owner_is_dead(new_owner())
        parent = new_owner().split("|")
        parent[3] = str(os.getppid())
        parent[4] = Path(f"/proc/{os.getppid()}/stat").read_text().rpartition(")")[2].split()[19]
        assert not owner_is_dead("|".join(parent))

    def test_a_gone_or_reused_pid_is_dead(self) -> None:
        host, boot, namespace, pid, start, nonce = new_owner().split("|")
        done = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        gone = done.stdout.strip()  # that process has exited
        assert owner_is_dead("|".join((host, boot, namespace, gone, start, nonce)))
        reused = str(int(start) + 12345)  # this pid, but a process that started at another time
        assert owner_is_dead("|".join((host, boot, namespace, pid, reused, nonce)))
        assert owner_is_dead("|".join((host, "another-boot", namespace, pid, start, nonce)))

    def test_unknown_namespaces_hosts_and_formats_are_left_to_expire(self) -> None:
        host, boot, namespace, _, start, nonce = new_owner().split("|")
        assert not owner_is_dead("|".join((host, boot, "pid:[1]", "999999", start, nonce)))
        assert not owner_is_dead("|".join(("elsewhere", boot, namespace, "999999", "1", nonce)))
        assert not owner_is_dead(f"{host}:999999:old-format")


def test_the_lease_is_renewed_while_a_long_attempt_runs(path: str) -> None:
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


def test_the_default_lease_follows_the_transport_timeout(path: str) -> None:
    transport = SegmentTransport("k", endpoint="http://127.0.0.1:9", timeout=25)
    assert OutboxDestination(transport, path=path, open_now=False).lease == 75
    assert OutboxDestination(MemoryTransport(), path=path, open_now=False).lease == 30


def test_a_poison_message_is_isolated_and_set_aside_while_the_rest_flows(path: str) -> None:
    """One message that always fails does not hold up its channel, and ends up dead."""
    stored(path, "poisoned", messages(200))
    policy = RetryPolicy(max_attempts=3, max_elapsed=1.0, base_delay=0.01, max_delay=0.05)
    poisoned = Recording(poison=0)
    destination = OutboxDestination(
        poisoned, path=path, channel="poisoned", linger=0.01, batch_size=10, retry=policy
    )
    assert wait_until(lambda: len(set(poisoned.delivered)) == 199)
    assert wait_until(lambda: outbox_status(path).dead == {"poisoned": 1})
    stats = destination.stats()
    assert (stats.failed, stats.outbox_rows) == (1, 0)
    assert poisoned.calls < 100, f"{poisoned.calls} attempts: a hot loop"
    assert destination.flush(1).pending == 0  # a dead row is not waited for
    destination.shutdown(1)
    assert purge(path, dead_only=True) == 1
    assert outbox_status(path).dead == {}


def test_an_outage_never_kills_rows(server: FaultServer, path: str) -> None:
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


def test_copies_in_a_partial_delivery_error_are_matched_by_id(path: str) -> None:
    """A transport that lists copies of the messages to retry: nothing counts as delivered."""
    stored(path, "copying", messages(10))
    copying = Recording(copies=True)
    destination = OutboxDestination(copying, path=path, channel="copying", linger=0.01, retry=FAST)
    assert wait_until(lambda: copying.calls >= 3)
    stats = destination.stats()
    assert (stats.delivered, stats.failed) == (0, 0)
    assert outbox_status(path).pending == 10
    destination.shutdown(0.5)


def test_an_unknown_id_in_a_partial_delivery_error_retries_rather_than_guesses() -> None:
    batch = messages(3)

    class Confused:
        def deliver(self, _: Sequence[Message]) -> None:
            raise PartialDeliveryError("?", retry=messages(1), failed=[(batch[0], "400")])

        def close(self) -> None:
            pass

    outcome = attempt(Confused(), batch)
    assert [m for m, _ in outcome.failed] == batch[:1]
    assert outcome.retry == batch[1:]
    assert outcome.delivered == []


# --- P1: robustness ---------------------------------------------------------------------------

HOLD_THE_LOCK = """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()  # until the test says so
    conn.execute("COMMIT")
"""


def test_a_lock_held_at_open_is_waited_out_not_given_up(server: FaultServer, path: str) -> None:
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
        assert destination.outbox_problem is None
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
        indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")]
    assert "outbox_leased" in indexes  # the open-time lease scan reads only leased rows


def test_a_deleted_file_is_noticed_reported_and_recreated(server: FaultServer, path: str) -> None:
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


def test_the_key_never_reaches_the_file_and_a_new_key_gets_its_own_channel(
    server: FaultServer, path: str
) -> None:
    server.set_status(503)
    configure(api_key="sk_live_SECRET_12345", endpoint=server.url, outbox=path)
    with bound_context(user_id="u", account_id="acc_1"):
        track(Events.PLAN_UPGRADED)
    assert instrumentor.flush(0.5).in_outbox == 3
    instrumentor.shutdown(1)  # reading the file below must not disturb a live connection's locks
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
    old_key = instrumentor.transports.AccoilTransport("sk_live_SECRET_12345", endpoint=server.url)
    try:
        result = drain(path, old_key, timeout=10)
    finally:
        old_key.close()
    assert (result.delivered, result.pending) == (3, 0)
    for request in server.received():
        if waiting & set(request.message_ids):
            assert "SECRET_12345" in request.headers["authorization"]


def test_rows_of_a_channel_nobody_serves_are_reported(path: str) -> None:
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


def test_drain_takes_one_channel_and_refuses_a_missing_file(path: str) -> None:
    stored(path, "a", messages(3))
    stored(path, "b", messages(2))
    recording = Recording()
    result = drain(path, recording, channel="a", timeout=5)
    assert (result.delivered, len(recording.delivered)) == (3, 3)
    assert outbox_status(path).channels == {"b": 2}
    missing = str(Path(path).with_name("typo.db"))
    for call in (lambda: drain(missing, recording), lambda: purge(missing)):
        with pytest.raises(OutboxError, match=r"there is no outbox at .*typo\.db"):
            call()
    assert not Path(missing).exists()


def test_status_writes_nothing_and_refuses_a_missing_file(path: str) -> None:
    store = OutboxStore(path, channel="c")
    store.persist(messages(2))
    store.claim(1)
    host, boot, namespace, *_ = store.owner.split("|")
    dead = "|".join((host, boot, namespace, "999999999", "1", "x"))
    with connect_sqlite(path) as conn:
        conn.execute("UPDATE outbox SET lease_owner = ? WHERE lease_owner IS NOT NULL", (dead,))
    store.close()
    with connect_sqlite(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = Path(path).read_bytes()
    status = outbox_status(path)
    assert (status.pending, status.leased) == (2, 1)
    assert Path(path).read_bytes() == before  # no opened_at, no lease freed
    with connect_sqlite(path) as conn:
        assert conn.execute("SELECT count(*) FROM outbox WHERE lease_owner = ?", (dead,)).fetchone()
    with pytest.raises(OutboxError, match="there is no outbox at"):
        outbox_status(Path(path).with_name("typo.db"))
    assert not Path(path).with_name("typo.db").exists()


def test_a_file_of_the_first_schema_is_upgraded(path: str) -> None:
    with connect_sqlite(path) as conn:
        conn.executescript(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, channel TEXT NOT NULL, message_id TEXT "
            "NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL "
            "DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0, lease_owner TEXT, lease_until "
            "REAL); CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value); "
            "PRAGMA user_version = 1;"
        )
    stored(path, "c", messages(2))
    assert outbox_status(path).channels == {"c": 2}
