"""The outbox store against real SQLite files: queue, leases, bad paths, schema, admin functions."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from instrumentor._messages import TrackMessage
from instrumentor.delivery import drain, outbox_status, purge
from instrumentor.delivery._outbox import OutboxError, OutboxStore, check_path
from instrumentor.delivery._outbox_owner import new_owner, owner_is_dead
from tests.delivery.support import Recording, messages, stored
from tests.support import connect_sqlite

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)


def track(n: int = 0) -> TrackMessage:
    return TrackMessage(
        user_id=f"u_{n}",
        event="Report_Created",
        group_id="proj_1",
        group_type="project",
        category="core_value",
        properties={"n": n, "tags": ["a", "b"]},
        timestamp=WHEN,
        context={"trace": {"id": "t"}},
    )


def store(tmp_path: Path, **options: object) -> OutboxStore:
    created = OutboxStore(tmp_path / "outbox.db", **options)  # type: ignore[arg-type]
    created.open()
    return created


class TestQueue:
    def test_persist_claim_and_settle(self, tmp_path: Path) -> None:
        """Rows come back in order with their messages; settled rows are gone."""
        outbox = store(tmp_path)
        messages = [track(n) for n in range(5)]
        assert outbox.persist(messages) == (5, [])
        assert outbox.pending() == 5
        rows = outbox.claim(3)
        assert [r.message for r in rows] == messages[:3]
        assert [r.attempts for r in rows] == [1, 1, 1]
        rest = outbox.claim(10)
        assert {r.id for r in rest}.isdisjoint(r.id for r in rows)  # never handed out twice
        assert [r.message for r in rest] == messages[3:]
        outbox.settle([r.id for r in rows])
        assert outbox.pending() == 2
        assert outbox_status(outbox.path).pending == 2

    def test_released_rows_wait_for_their_next_attempt(self, tmp_path: Path) -> None:
        """Rows handed back wait for next_attempt_at; only the leaseholder may hand a row back."""
        outbox = store(tmp_path)
        outbox.persist([track()])
        (row,) = outbox.claim(1)
        outbox.settle([], [(row.id, time.time() + 3600, 0)], error="POST /v1/batch answered 503")
        assert outbox.claim(1) == []  # not due yet
        status = outbox_status(outbox.path)
        assert (status.pending, status.leased) == (1, 0)
        assert status.last_error == "POST /v1/batch answered 503"
        outbox.settle([], [(row.id, time.time(), 0)])  # not leased by us any more: unchanged
        assert outbox.claim(1) == []

    def test_an_expired_lease_is_claimed_again(self, tmp_path: Path) -> None:
        """A claimer that never settles loses its batch when the lease ends."""
        first = store(tmp_path, lease=0.2, channel="c")
        second = store(tmp_path, lease=0.2, channel="c")
        first.persist([track(1), track(2)])
        claimed = first.claim(10)
        assert len(claimed) == 2
        assert second.claim(10) == []
        deadline = time.monotonic() + 5
        again = second.claim(10)
        while not again and time.monotonic() < deadline:
            time.sleep(0.05)
            again = second.claim(10)
        assert [r.id for r in again] == [r.id for r in claimed]
        assert [r.attempts for r in again] == [2, 2]

    def test_a_dead_processes_leases_are_freed_at_open(self, tmp_path: Path) -> None:
        """A new process does not wait for the lease of one that is gone from this host."""
        outbox = store(tmp_path, lease=3600)
        outbox.persist([track()])
        assert len(outbox.claim(1)) == 1
        host, boot, namespace, *_ = outbox.owner.split("|")
        dead = "|".join((host, boot, namespace, "999999999", "1", "dead"))
        with connect_sqlite(outbox.path) as conn:  # as if a dead pid had leased it
            conn.execute("UPDATE outbox SET lease_owner = ?", (dead,))
        assert len(store(tmp_path, lease=3600).claim(1)) == 1

    def test_channels_are_separate_queues(self, tmp_path: Path) -> None:
        """Each channel is claimed separately; status counts rows per channel."""
        accoil = store(tmp_path, channel="accoil")
        segment = store(tmp_path, channel="segment")
        first = track(1)
        accoil.persist([first])
        segment.persist([track(2), track(3)])
        assert (accoil.pending(), segment.pending()) == (1, 2)
        assert [r.message for r in accoil.claim(10)] == [first]
        assert outbox_status(accoil.path).channels == {"accoil": 1, "segment": 2}

    def test_the_outbox_is_bounded(self, tmp_path: Path) -> None:
        """Beyond max_rows (all channels together) new messages are refused, not stored."""
        one = store(tmp_path, max_rows=3, channel="one")
        two = store(tmp_path, max_rows=3, channel="two")
        assert one.persist([track(1), track(2)]) == (2, [])
        last = track(4)
        stored, refused = two.persist([track(3), last])
        assert (stored, refused) == (1, [last])
        assert outbox_status(one.path).pending == 3
        one.settle([r.id for r in one.claim(10)])
        assert two.persist([last]) == (1, [])

    def test_an_unreadable_row_comes_back_without_a_message(self, tmp_path: Path) -> None:
        """A row whose stored JSON cannot be read is claimed with message None."""
        outbox = store(tmp_path)
        outbox.persist([track()])
        with connect_sqlite(outbox.path) as conn:
            conn.execute("UPDATE outbox SET body = '{not json'")
        (row,) = outbox.claim(1)
        assert row.message is None

    def test_purge_deletes_everything(self, tmp_path: Path) -> None:
        """purge() deletes every row, leased ones included, and resets the counters."""
        outbox = store(tmp_path)
        outbox.persist([track(n) for n in range(4)])
        outbox.claim(2)
        assert purge(outbox.path) == 4
        assert outbox.pending() == 0
        assert outbox_status(outbox.path).pending == 0

    def test_the_file_is_in_wal_mode(self, tmp_path: Path) -> None:
        """The outbox file is in WAL mode (readers never block the writer)."""
        outbox = store(tmp_path, synchronous="full")
        outbox.persist([track()])
        with connect_sqlite(outbox.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def read_only_checks(base: Path) -> None:
    with pytest.raises(OutboxError, match="read-only"):
        store(base)
    with pytest.raises(OutboxError, match="not writable"):
        store(base / "locked")


class TestBadPaths:
    def test_a_missing_directory(self, tmp_path: Path) -> None:
        """A path in a missing directory is refused, saying to create it."""
        with pytest.raises(OutboxError, match=r"does not exist: create it \(mkdir -p"):
            store(tmp_path / "nope")

    def test_a_parent_that_is_a_file(self, tmp_path: Path) -> None:
        """Also as root: a regular file cannot hold a directory entry."""
        (tmp_path / "file").write_text("x")
        with pytest.raises(OutboxError, match="is not a directory"):
            OutboxStore(tmp_path / "file" / "outbox.db").open()

    def test_a_path_that_is_a_directory(self, tmp_path: Path) -> None:
        """A path that is a directory is refused, saying to name a file inside it."""
        with pytest.raises(OutboxError, match="is a directory"):
            check_path(str(tmp_path))

    def test_a_corrupt_file(self, tmp_path: Path) -> None:
        """A file that is not SQLite is refused, saying to move it aside."""
        (tmp_path / "outbox.db").write_bytes(b"this is not sqlite at all" * 100)
        with pytest.raises(OutboxError, match=r"not a usable SQLite database.*move it aside"):
            store(tmp_path)

    def test_a_corrupt_file_past_its_header(self, tmp_path: Path) -> None:
        """A valid header with garbage behind it is caught by SQLite itself."""
        (tmp_path / "outbox.db").write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
        with pytest.raises(OutboxError, match=r"not a usable SQLite database.*-wal.*-shm"):
            store(tmp_path)

    def test_a_read_only_file_and_directory(self) -> None:
        """chmod'ed file and directory. Root ignores permissions, so as root the checks run in a
        forked child that has switched to the unprivileged user ``nobody``."""
        base = Path(tempfile.mkdtemp(prefix="outbox-ro-"))
        try:
            base.chmod(0o777)  # writable by all: only the file is read-only
            outbox = store(base)
            outbox.close()
            os.chmod(outbox.path, 0o444)
            (base / "locked").mkdir(mode=0o555)
            if os.geteuid() != 0:
                read_only_checks(base)
                return
            pid = os.fork()
            if pid == 0:  # the child: drop root, check, report by exit status
                code = 1
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    read_only_checks(base)
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, "the checks failed as user nobody"
        finally:
            shutil.rmtree(base)

    def test_a_full_disk_is_an_outbox_error(self, tmp_path: Path) -> None:
        """SQLite's own 'database or disk is full' (a page limit here) says what to do."""
        outbox = store(tmp_path)
        ((pages,),) = outbox.execute("PRAGMA page_count")
        outbox.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(OutboxError, match=r"full.*free space"):
            outbox.persist([track(n) for n in range(200)])
        assert outbox.pending() == 0  # the transaction was rolled back whole


class TestSchema:
    def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A file written by a newer schema version is refused, not touched."""
        with connect_sqlite(tmp_path / "outbox.db") as conn:
            conn.execute("PRAGMA user_version = 99")
        with pytest.raises(OutboxError, match="newer instrumentor"):
            store(tmp_path)

    def test_a_file_of_the_first_schema_is_upgraded(self, tmp_path: Path) -> None:
        """A file of the first schema is upgraded in place when a store opens it."""
        path = str(tmp_path / "outbox.db")
        with connect_sqlite(path) as conn:
            conn.executescript(
                "CREATE TABLE outbox (id INTEGER PRIMARY KEY, channel TEXT NOT NULL, "
                "message_id TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL, "
                "attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0, "
                "lease_owner TEXT, lease_until REAL); "
                "CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value); PRAGMA user_version = 1;"
            )
        stored(path, "c", messages(2))
        assert outbox_status(path).channels == {"c": 2}


class TestLeaseOwners:
    def test_this_process_and_live_processes_are_not_dead(self) -> None:
        """This process's owner and a live parent's are never taken for dead."""
        assert not owner_is_dead(new_owner())
        parent = new_owner().split("|")
        parent[3] = str(os.getppid())
        parent[4] = Path(f"/proc/{os.getppid()}/stat").read_text().rpartition(")")[2].split()[19]
        assert not owner_is_dead("|".join(parent))

    def test_a_gone_or_reused_pid_is_dead(self) -> None:
        """A pid that exited, was reused, or ran before a reboot is provably dead."""
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
        """Owners in another PID namespace or host, or of an old format, wait for expiry."""
        host, boot, namespace, _, start, nonce = new_owner().split("|")
        assert not owner_is_dead("|".join((host, boot, "pid:[1]", "999999", start, nonce)))
        assert not owner_is_dead("|".join(("elsewhere", boot, namespace, "999999", "1", nonce)))
        assert not owner_is_dead(f"{host}:999999:old-format")


class TestAdmin:
    def test_drain_takes_one_channel_and_refuses_a_missing_file(self, tmp_path: Path) -> None:
        """drain() delivers one channel's rows; drain and purge never create a missing file."""
        path = str(tmp_path / "outbox.db")
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

    def test_status_writes_nothing_and_refuses_a_missing_file(self, tmp_path: Path) -> None:
        """outbox_status() reads without writing (no lease freed) and never creates a file."""
        path = str(tmp_path / "outbox.db")
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
            assert conn.execute(
                "SELECT count(*) FROM outbox WHERE lease_owner = ?", (dead,)
            ).fetchone()
        with pytest.raises(OutboxError, match="there is no outbox at"):
            outbox_status(Path(path).with_name("typo.db"))
        assert not Path(path).with_name("typo.db").exists()
