"""The outbox store against real SQLite files: persist, claim, settle, leases, bounds, bad paths."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from instrumentor._messages import TrackMessage
from instrumentor.delivery import outbox_status, purge
from instrumentor.delivery._outbox import OutboxError, OutboxStore, check_path
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
        outbox = store(tmp_path)
        outbox.persist([track()])
        with connect_sqlite(outbox.path) as conn:
            conn.execute("UPDATE outbox SET body = '{not json'")
        (row,) = outbox.claim(1)
        assert row.message is None

    def test_purge_deletes_everything(self, tmp_path: Path) -> None:
        outbox = store(tmp_path)
        outbox.persist([track(n) for n in range(4)])
        outbox.claim(2)
        assert purge(outbox.path) == 4
        assert outbox.pending() == 0
        assert outbox_status(outbox.path).pending == 0

    def test_the_file_is_in_wal_mode(self, tmp_path: Path) -> None:
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
        with pytest.raises(OutboxError, match=r"does not exist: create it \(mkdir -p"):
            store(tmp_path / "nope")

    def test_a_parent_that_is_a_file(self, tmp_path: Path) -> None:
        """Also as root: a regular file cannot hold a directory entry."""
        (tmp_path / "file").write_text("x")
        with pytest.raises(OutboxError, match="is not a directory"):
            OutboxStore(tmp_path / "file" / "outbox.db").open()

    def test_a_path_that_is_a_directory(self, tmp_path: Path) -> None:
        with pytest.raises(OutboxError, match="is a directory"):
            check_path(str(tmp_path))

    def test_a_corrupt_file(self, tmp_path: Path) -> None:
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

    def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        with connect_sqlite(tmp_path / "outbox.db") as conn:
            conn.execute("PRAGMA user_version = 99")
        with pytest.raises(OutboxError, match="newer instrumentor"):
            store(tmp_path)

    def test_a_full_disk_is_an_outbox_error(self, tmp_path: Path) -> None:
        """SQLite's own 'database or disk is full' (a page limit here) says what to do."""
        outbox = store(tmp_path)
        assert outbox._conn is not None
        pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
        outbox._conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(OutboxError, match=r"full.*free space"):
            outbox.persist([track(n) for n in range(200)])
        assert outbox.pending() == 0  # the transaction was rolled back whole
