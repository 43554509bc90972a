"""The SQLite outbox: a durable queue of messages, shared safely by several processes.

One table holds one row per message: its id, its
:func:`~instrumentor.messages.message_to_data` JSON,
the channel (destination) it belongs to, and the lease bookkeeping (``lease_owner``,
``lease_until``, ``attempts``, ``next_attempt_at``). Writers append batches in one transaction
each (WAL mode); deliverers *claim* a batch with ``BEGIN IMMEDIATE`` and ``UPDATE … RETURNING``,
which leases the rows to them, and delete the rows once the provider accepted them. A process
that dies mid-batch leaves leased rows that are claimable again once the lease expires (at
once for a dead process on the same host). Everything here runs on worker threads or in the
CLI; nothing is ever called from the caller's thread.

What the ``instrumentor outbox`` command calls is in :mod:`instrumentor.delivery.outbox_admin`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from instrumentor.exceptions import InstrumentorError
from instrumentor.messages import Message, message_from_data, message_to_data

__all__ = [
    "OutboxError",
    "OutboxRow",
    "OutboxStatus",
    "OutboxStore",
    "Synchronous",
    "check_path",
]

#: How hard a commit is made durable: ``"normal"`` survives a process crash (``kill -9``),
#: ``"full"`` also an OS crash or power loss, at the price of an fsync per commit.
Synchronous = Literal["normal", "full"]

_SCHEMA_VERSION = 1
_HEADER = b"SQLite format 3\x00"
_LOCK_RETRIES = 3
_CHUNK = 500  # ids per statement (far below SQLite's variable limit)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS outbox_by_channel ON outbox (channel, id);
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value);
"""
_CLAIMABLE = "channel = ? AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
_T = TypeVar("_T")
_inherited: list[sqlite3.Connection] = []  # a forked child's copies: never used, never closed


class OutboxError(InstrumentorError):
    """The outbox file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class OutboxRow:
    """One claimed row: its id, its message (``None`` if the stored JSON is unreadable)."""

    id: int
    message: Message | None
    attempts: int
    created_at: float


@dataclass(frozen=True)
class OutboxStatus:
    """What an outbox file holds (for ``instrumentor outbox status``).

    Attributes:
        path: The file.
        pending: Messages waiting, leased ones included.
        leased: Messages claimed by a process now (being delivered).
        oldest_age: Seconds since the oldest waiting message was stored, or ``None``.
        channels: Messages waiting per channel (destination).
        last_error: The last delivery error recorded, or ``None``.
        last_error_at: When it was recorded (Unix time), or ``None``.
    """

    path: str
    pending: int
    leased: int
    oldest_age: float | None
    channels: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: float | None = None


def _explain(path: str, exc: BaseException) -> str:
    """What went wrong with ``path``, and what to do about it."""
    text = str(exc)
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return (
            f"the outbox {path} is not a usable SQLite database ({text}): move it aside "
            "(instrumentor then starts a new, empty one) or point ANALYTICS_OUTBOX elsewhere"
        )
    if "readonly" in lowered or "read-only" in lowered:
        return (
            f"the outbox {path} is read-only ({text}): make the file and its directory writable "
            "by this process's user, or point ANALYTICS_OUTBOX elsewhere"
        )
    if "full" in lowered or "no space" in lowered:
        return f"the disk holding the outbox {path} is full ({text}): free space on it"
    if "locked" in lowered or "busy" in lowered:
        return f"the outbox {path} stayed locked by another process ({text}); retrying"
    return (
        f"cannot use the outbox {path} ({type(exc).__name__}: {text}): check that its "
        "directory exists and is writable, or point ANALYTICS_OUTBOX elsewhere"
    )


def check_path(path: str) -> None:
    """Cheap checks (a few system calls, no SQLite) that ``path`` can hold an outbox.

    Raises:
        OutboxError: Saying what is wrong and what to do.
    """
    target = Path(path)
    parent = target.parent
    if not parent.exists():
        raise OutboxError(
            f"the outbox directory {parent} does not exist: create it (mkdir -p {parent}) "
            "or point ANALYTICS_OUTBOX at a file in an existing directory"
        )
    if not parent.is_dir():
        raise OutboxError(
            f"the outbox {path} cannot be created: {parent} is not a directory; "
            "point ANALYTICS_OUTBOX at a file in a directory"
        )
    if target.is_dir():
        raise OutboxError(f"the outbox {path} is a directory: give a file name inside it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutboxError(
            f"the outbox directory {parent} is not writable by this process (SQLite creates "
            "its -wal and -shm files there): make it writable or point ANALYTICS_OUTBOX elsewhere"
        )
    if target.exists():
        if not os.access(target, os.R_OK | os.W_OK):
            raise OutboxError(
                f"the outbox {path} is read-only for this process: make it writable "
                "or point ANALYTICS_OUTBOX elsewhere"
            )
        try:
            with target.open("rb") as file:
                header = file.read(len(_HEADER))
        except OSError as exc:
            raise OutboxError(_explain(path, exc)) from None
        if header and header != _HEADER:
            raise OutboxError(
                _explain(path, sqlite3.DatabaseError("file is not a database"))
            ) from None


class OutboxStore:
    """One process's handle on an outbox file, for one channel.

    Thread-safe (one lock around the connection); reopens its connection after ``fork()``.

    Args:
        path: The SQLite file; created (with its tables) when missing.
        channel: The name rows are stored and claimed under; destinations sharing a file need
            distinct channels (processes of one application share theirs).
        max_rows: Messages the file may hold, all channels together; beyond it new messages
            are refused (counted by the caller).
        synchronous: ``"normal"`` (survives ``kill -9``) or ``"full"`` (also power loss).
        lease: Seconds a claimed batch stays reserved to its claimer.
        busy_timeout: Seconds a statement waits for another process's lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        channel: str = "default",
        max_rows: int = 1_000_000,
        synchronous: Synchronous = "normal",
        lease: float = 60.0,
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise OutboxError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        if max_rows < 1 or lease <= 0 or busy_timeout < 0:
            raise OutboxError("max_rows must be >= 1, lease > 0 and busy_timeout >= 0")
        self.path = os.fspath(path)
        self.channel = channel
        self.max_rows = max_rows
        self.synchronous = synchronous
        self.lease = lease
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.owner = self._new_owner()

    def _new_owner(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    # --- connection --------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating the file and tables if needed) and release dead processes' leases.

        Raises:
            OutboxError: If the file cannot be used; the message says what to do.
        """
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self.after_fork()
        if self._conn is not None:
            return self._conn
        check_path(self.path)
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise OutboxError(_explain(self.path, exc)) from None
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise OutboxError(
                    f"the outbox {self.path} was written by a newer instrumentor (schema "
                    f"{version}): upgrade, or drain it with that version first"
                )
            with _transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                # A write at open proves the file is writable (read-only, full disk).
                _set_meta(conn, "opened_at", time.time())
                self._release_dead_leases(conn)
        except OutboxError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise OutboxError(_explain(self.path, exc)) from None
        self._conn = conn
        return conn

    def _release_dead_leases(self, conn: sqlite3.Connection) -> None:
        """Free the leases of processes on this host that are gone (a crash, a restart)."""
        host = socket.gethostname()
        owners = [r[0] for r in conn.execute("SELECT DISTINCT lease_owner FROM outbox")]
        for owner in owners:
            if owner is None or owner == self.owner:
                continue
            owner_host, _, rest = owner.partition(":")
            pid_text = rest.partition(":")[0]
            if owner_host != host or not pid_text.isdigit():
                continue
            if int(pid_text) == os.getpid() or not _alive(int(pid_text)):
                conn.execute(
                    "UPDATE outbox SET lease_owner = NULL, lease_until = NULL "
                    "WHERE lease_owner = ?",
                    (owner,),
                )

    def after_fork(self) -> None:
        """Forget the parent's connection (never used nor closed here) and lease identity."""
        if self._conn is not None:
            _inherited.append(self._conn)  # closing it could disturb the parent's locks
        self._conn = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.owner = self._new_owner()

    def close(self) -> None:
        """Close the connection (this process's own only). Reopens on next use."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``, errors turned into :class:`OutboxError`."""
        with self._lock:
            try:
                conn = self._connection()
                with _transaction(conn):
                    yield conn
            except sqlite3.Error as exc:
                raise OutboxError(_explain(self.path, exc)) from exc

    def _retrying(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in a write transaction, again if the file stayed locked."""
        for attempt_number in range(_LOCK_RETRIES):
            try:
                with self._write() as conn:
                    return work(conn)
            except OutboxError as exc:
                locked = isinstance(exc.__cause__, sqlite3.OperationalError) and any(
                    word in str(exc.__cause__).lower() for word in ("locked", "busy")
                )
                if not locked or attempt_number == _LOCK_RETRIES - 1:
                    raise
                time.sleep(0.05 * 2**attempt_number)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(_explain(self.path, exc)) from exc

    # --- the queue ---------------------------------------------------------------------------

    def persist(self, messages: Sequence[Message]) -> tuple[int, list[Message]]:
        """Store ``messages`` in one transaction, as many as ``max_rows`` leaves room for.

        Returns:
            How many were stored, and the messages refused because the outbox was full.

        Raises:
            OutboxError: If nothing could be written (full disk, lock held too long, ...).
        """
        now = time.time()
        encoded = [
            (m.message_id, json.dumps(message_to_data(m), separators=(",", ":"))) for m in messages
        ]

        def work(conn: sqlite3.Connection) -> int:
            total = conn.execute(
                "SELECT coalesce(sum(value), 0) FROM outbox_meta WHERE key LIKE 'rows:%'"
            ).fetchone()[0]
            room = max(self.max_rows - int(total), 0)
            stored = encoded[:room]
            conn.executemany(
                "INSERT INTO outbox (channel, message_id, body, created_at) VALUES (?, ?, ?, ?)",
                [(self.channel, mid, body, now) for mid, body in stored],
            )
            _add_rows(conn, self.channel, len(stored))
            return len(stored)

        stored = self._retrying(work) if encoded else 0
        return stored, list(messages[stored:])

    def pending(self) -> int:
        """Messages of this channel in the file (leased ones included), from a counter."""
        rows = self._read("SELECT value FROM outbox_meta WHERE key = ?", (f"rows:{self.channel}",))
        return int(rows[0][0]) if rows and rows[0][0] else 0

    def claim(self, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows of this channel to this process, oldest first."""
        now = time.time()

        def work(conn: sqlite3.Connection) -> list[tuple[int, str, int, float]]:
            return conn.execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1 "
                f"WHERE id IN (SELECT id FROM outbox WHERE {_CLAIMABLE} ORDER BY id LIMIT ?) "
                "RETURNING id, body, attempts, created_at",
                (self.owner, now + self.lease, self.channel, now, now, limit),
            ).fetchall()

        return [
            OutboxRow(row_id, _decode(body), attempts, created)
            for row_id, body, attempts, created in sorted(self._retrying(work))
        ]

    def settle(
        self,
        done: Sequence[int],
        retry: Sequence[int],
        next_attempt_at: float,
        error: str | None,
    ) -> None:
        """Delete ``done`` rows and hand ``retry`` rows back for ``next_attempt_at``, at once."""

        def work(conn: sqlite3.Connection) -> None:
            deleted: dict[str, int] = {}
            for chunk in _chunks(done):
                marks = ",".join("?" * len(chunk))
                for (channel,) in conn.execute(
                    f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING channel", chunk
                ).fetchall():
                    deleted[channel] = deleted.get(channel, 0) + 1
            for channel, count in deleted.items():
                _add_rows(conn, channel, -count)
            for chunk in _chunks(retry):
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, "
                    f"next_attempt_at = ? WHERE id IN ({marks}) AND lease_owner = ?",
                    (next_attempt_at, *chunk, self.owner),
                )
            if error is not None:
                _set_meta(conn, "last_error", error)
                _set_meta(conn, "last_error_at", time.time())

        if done or retry or error is not None:
            self._retrying(work)

    def due_before(self, when: float) -> bool:
        """Whether a row of this channel becomes claimable by ``when`` (Unix time)."""
        rows = self._read(
            "SELECT 1 FROM outbox WHERE channel = ? "
            "AND max(next_attempt_at, coalesce(lease_until, 0)) <= ? LIMIT 1",
            (self.channel, when),
        )
        return bool(rows)

    def status(self) -> OutboxStatus:
        """What the whole file holds, counted exactly (every channel)."""
        now = time.time()
        channels = {
            str(c): int(n)
            for c, n in self._read("SELECT channel, count(*) FROM outbox GROUP BY channel")
        }
        ((leased, oldest),) = self._read(
            "SELECT count(lease_until > ? OR NULL), min(created_at) FROM outbox", (now,)
        )
        meta: dict[str, Any] = dict(
            self._read("SELECT key, value FROM outbox_meta WHERE key LIKE 'last_error%'")
        )
        error_at = meta.get("last_error_at")
        return OutboxStatus(
            path=self.path,
            pending=sum(channels.values()),
            leased=int(leased),
            oldest_age=None if oldest is None else max(now - float(oldest), 0.0),
            channels=channels,
            last_error=None if meta.get("last_error") is None else str(meta["last_error"]),
            last_error_at=None if error_at is None else float(error_at),
        )

    def purge(self) -> int:
        """Delete every row of every channel; return how many there were."""

        def work(conn: sqlite3.Connection) -> int:
            count = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
            conn.execute("DELETE FROM outbox")
            conn.execute("DELETE FROM outbox_meta WHERE key LIKE 'rows:%'")
            return count

        return self._retrying(work)

    def __repr__(self) -> str:
        return f"OutboxStore({self.path!r}, channel={self.channel!r})"


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute("INSERT OR REPLACE INTO outbox_meta (key, value) VALUES (?, ?)", (key, value))


def _add_rows(conn: sqlite3.Connection, channel: str, count: int) -> None:
    conn.execute(
        "INSERT INTO outbox_meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = max(value + excluded.value, 0)",
        (f"rows:{channel}", count),
    )


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _decode(body: str) -> Message | None:
    try:
        return message_from_data(json.loads(body))
    except ValueError:  # json.JSONDecodeError is a ValueError
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
