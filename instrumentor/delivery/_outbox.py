"""The SQLite outbox: a durable queue of messages, shared safely by several processes.

One table holds one row per message: its id, its
:func:`~instrumentor._messages.message_to_data` JSON,
the channel (destination) it belongs to, the lease bookkeeping (``lease_owner``,
``lease_until``, ``attempts``, ``next_attempt_at``) and the poison bookkeeping (``strikes``:
failures blamed on the message itself; ``dead``: why it was set aside). Writers append batches
in one transaction each (WAL mode), possibly already leased to themselves; deliverers *claim*
due rows with ``BEGIN IMMEDIATE`` and ``UPDATE … RETURNING``, which leases them, renew the
lease while an attempt runs, and delete the rows once the provider accepted them. A process
that dies mid-batch leaves leased rows that are claimable again once the lease expires, or at
once when the owner is provably dead (:mod:`~instrumentor.delivery._outbox_owner`). Everything
here runs on worker threads or in the CLI; nothing is ever called from the caller's thread.

What the ``instrumentor outbox`` command calls is in :mod:`instrumentor.delivery._outbox_admin`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from instrumentor._messages import Message, message_from_data, message_to_data
from instrumentor.delivery._outbox_owner import new_owner, owner_is_dead
from instrumentor.exceptions import InstrumentorError

__all__ = [
    "OutboxError",
    "OutboxRow",
    "OutboxStatus",
    "OutboxStore",
    "Synchronous",
    "UNSERVED_AFTER",
    "check_path",
]

#: How hard a commit is made durable: ``"normal"`` survives a process crash (``kill -9``),
#: ``"full"`` also an OS crash or power loss, at the price of an fsync per commit.
Synchronous = Literal["normal", "full"]

_SCHEMA_VERSION = 2
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
    lease_until REAL,
    strikes INTEGER NOT NULL DEFAULT 0,
    dead TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_channel ON outbox (channel, id);
CREATE INDEX IF NOT EXISTS outbox_leased ON outbox (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value);
"""
_MIGRATE_1 = (
    "ALTER TABLE outbox ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE outbox ADD COLUMN dead TEXT",
)
_CLAIMABLE = (
    "channel = ? AND dead IS NULL AND next_attempt_at <= ? "
    "AND (lease_until IS NULL OR lease_until < ?)"
)
_JOURNAL_LIMIT = 64 * 1024 * 1024  # bytes the -wal file is truncated to after a checkpoint
_VACUUM_PAGES = 1000  # free pages returned to the file system per incremental vacuum
#: Seconds after which a channel with rows that no process served is reported as unserved.
UNSERVED_AFTER = 600.0
_T = TypeVar("_T")
_inherited: list[sqlite3.Connection] = []  # a forked child's copies: never used, never closed


def _close_if_owner(conn: sqlite3.Connection, pid: int) -> None:
    """Close a connection a store dropped without ``close()``, in the process that opened it."""
    if os.getpid() == pid:
        with suppress(sqlite3.Error):
            conn.close()


_stores: weakref.WeakSet[OutboxStore] = weakref.WeakSet()
#: One lock per file for this process's write transactions: two connections of one process
#: then queue in Python instead of in SQLite's busy handler, which sleeps milliseconds a time.
_file_locks: dict[str, threading.Lock] = {}
_file_locks_lock = threading.Lock()
_held: list[threading.Lock] = []  # the stores' locks taken for a fork


class OutboxError(InstrumentorError):
    """The outbox file cannot be used; the message says why and what to do."""

    def is_locked(self) -> bool:
        """Whether another process held the file's lock too long (worth trying again later)."""
        cause = self.__cause__
        return isinstance(cause, sqlite3.OperationalError) and any(
            word in str(cause).lower() for word in ("locked", "busy")
        )


@dataclass(frozen=True)
class OutboxRow:
    """One claimed row: its id, its message (``None`` if the stored JSON is unreadable).

    Attributes:
        id: The row id.
        message: The message, or ``None`` if its stored JSON cannot be read.
        attempts: Attempts so far, this one included.
        created_at: When it was stored (Unix time).
        strikes: Earlier failures blamed on the message itself (its batch-mates were accepted).
    """

    id: int
    message: Message | None
    attempts: int
    created_at: float
    strikes: int = 0


@dataclass(frozen=True)
class OutboxStatus:
    """What an outbox file holds (for ``instrumentor outbox status``).

    Attributes:
        path: The file.
        pending: Messages waiting, leased ones included (dead ones not).
        leased: Messages claimed by a process now (being delivered).
        oldest_age: Seconds since the oldest waiting message was stored, or ``None``.
        channels: Messages waiting per channel (destination).
        last_error: The last delivery error recorded, or ``None``.
        last_error_at: When it was recorded (Unix time), or ``None``.
        dead: Messages set aside as dead (poison), per channel; kept until purged.
        unserved: Of ``channels``, those no process has served for ``UNSERVED_AFTER`` seconds
            (a transport removed, its key or endpoint changed): their rows wait for a
            ``drain(..., channel=...)`` or a ``purge``.
    """

    path: str
    pending: int
    leased: int
    oldest_age: float | None
    channels: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: float | None = None
    dead: dict[str, int] = field(default_factory=dict)
    unserved: dict[str, int] = field(default_factory=dict)


def _explain(path: str, exc: BaseException) -> str:
    """What went wrong with ``path``, and what to do about it."""
    text = str(exc)
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return (
            f"the outbox {path} is not a usable SQLite database ({text}): move it aside "
            f"together with {path}-wal and {path}-shm (instrumentor then starts a new, empty "
            "one) or point ANALYTICS_OUTBOX elsewhere"
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
    """Cheap checks (a few ``stat`` calls, no SQLite, the file never opened) of ``path``.

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
    if target.exists() and not os.access(target, os.R_OK | os.W_OK):
        raise OutboxError(
            f"the outbox {path} is read-only for this process: make it writable "
            "or point ANALYTICS_OUTBOX elsewhere"
        )
    # The file itself is not opened here: closing a descriptor on it would drop the POSIX
    # locks this process's SQLite connections hold on it. SQLite reports a file that is not
    # a database, and _explain says what to do.


def _missing(path: str) -> OutboxError:
    return OutboxError(
        f"there is no outbox at {path}: check the path (the value of ANALYTICS_OUTBOX); "
        "nothing was created"
    )


class OutboxStore:
    """One connection to an outbox file, for one channel.

    Thread-safe (one lock around the connection); reopens its connection after ``fork()``.
    Several stores may share an ``owner`` (one destination's threads, each with its own
    connection): they then hold the same leases.

    Args:
        path: The SQLite file; created (with its tables) when missing, unless ``create`` is
            false or ``readonly`` is true.
        channel: The name rows are stored and claimed under; destinations sharing a file need
            distinct channels (processes of one application share theirs).
        max_rows: Messages the file may hold, all channels together, dead ones included;
            beyond it new messages are refused (counted by the caller).
        synchronous: ``"normal"`` (survives ``kill -9``) or ``"full"`` (also power loss).
        lease: Seconds a claimed batch stays reserved to its claimer; :meth:`renew` extends it.
        busy_timeout: Seconds a statement waits for another process's lock.
        owner: The lease owner (:func:`~instrumentor.delivery._outbox_owner.new_owner`); a new
            one by default.
        create: Create the file when it is missing (``False``: :class:`OutboxError` instead).
        readonly: Open read-only (``mode=ro``): nothing is written, not even at open.
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
        owner: str | None = None,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise OutboxError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        if max_rows < 1 or lease <= 0 or busy_timeout < 0:
            raise OutboxError("max_rows must be >= 1, lease > 0 and busy_timeout >= 0")
        self.path = os.fspath(path)
        self._file_key = os.path.abspath(self.path)
        self.channel = channel
        self.max_rows = max_rows
        self.synchronous = synchronous
        self.lease = lease
        self.busy_timeout = busy_timeout
        self.create = create and not readonly
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None
        # Closes the connection if the store is dropped unclosed (Python 3.13 warns otherwise).
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.owner = owner or new_owner()
        #: ``(st_dev, st_ino)`` of the file the connection is open on, or ``None``.
        self.identity: tuple[int, int] | None = None
        _stores.add(self)

    # --- connection --------------------------------------------------------------------------

    def open(self, busy_timeout: float | None = None) -> None:
        """Open (creating the file and tables if allowed) and release dead owners' leases.

        Args:
            busy_timeout: Seconds to wait for another process's lock while opening (by default
                the store's); later statements wait the store's ``busy_timeout``.

        Raises:
            OutboxError: If the file cannot be used; the message says what to do.
                :meth:`OutboxError.is_locked` tells a lock held by another process (worth
                trying again) from a lasting problem.
        """
        with self._lock:
            self._connection(busy_timeout)

    def _connection(self, busy_timeout: float | None = None) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self.after_fork()
        if self._conn is not None:
            return self._conn
        if not self.create and not os.path.exists(self.path):
            raise _missing(self.path)
        if not self.readonly:
            check_path(self.path)
        wait = self.busy_timeout if busy_timeout is None else busy_timeout
        try:
            if self.readonly:
                uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro"
                conn = sqlite3.connect(
                    uri, uri=True, timeout=wait, isolation_level=None, check_same_thread=False
                )
            else:
                conn = sqlite3.connect(
                    self.path, timeout=wait, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise OutboxError(_explain(self.path, exc)) from exc
        try:
            self._prepare(conn)
            stat = os.stat(self.path)
        except OutboxError:
            conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            raise OutboxError(_explain(self.path, exc)) from exc
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        self.identity = (stat.st_dev, stat.st_ino)
        self._conn = conn
        self._finalizer = weakref.finalize(self, _close_if_owner, conn, os.getpid())
        self._finalizer.atexit = False  # the exit flush still needs it
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise OutboxError(
                f"the outbox {self.path} was written by a newer instrumentor (schema "
                f"{version}): upgrade, or drain it with that version first"
            )
        if self.readonly:
            if version < _SCHEMA_VERSION:
                raise OutboxError(
                    f"the outbox {self.path} has an older schema ({version}): open it with "
                    "this version's destination (or drain) once, which upgrades it"
                )
            return
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_LIMIT}").fetchone()
        conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        with _transaction(conn):
            if version == 1:
                for statement in _MIGRATE_1:
                    conn.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            # A write at open proves the file is writable (read-only, full disk).
            _set_meta(conn, f"seen:{self.channel}", time.time())
            self._release_dead_leases(conn)

    def _release_dead_leases(self, conn: sqlite3.Connection) -> None:
        """Free the leases of owners that are provably gone (see outbox_owner)."""
        owners = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT lease_owner FROM outbox WHERE lease_owner IS NOT NULL"
            )
        ]
        for owner in owners:
            if owner != self.owner and owner_is_dead(owner):
                conn.execute(
                    "UPDATE outbox SET lease_owner = NULL, lease_until = NULL "
                    "WHERE lease_owner = ?",
                    (owner,),
                )

    def replaced(self) -> bool:
        """Whether the file was deleted or replaced since the connection opened (a ``stat``)."""
        identity = self.identity
        if self._conn is None or identity is None:
            return False
        try:
            stat = os.stat(self.path)
        except OSError:
            return True
        return (stat.st_dev, stat.st_ino) != identity

    def after_fork(self) -> None:
        """Forget the parent's connection (never used nor closed here)."""
        if self._conn is not None:
            _inherited.append(self._conn)  # closing it could disturb the parent's locks
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._conn = None
        self.identity = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the connection (this process's own only). Reopens on next use."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            self._conn = None
            self.identity = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``, errors turned into :class:`OutboxError`."""
        with _file_locks_lock:
            file_lock = _file_locks.setdefault(self._file_key, threading.Lock())
        with self._lock, file_lock:
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
                if not exc.is_locked() or attempt_number == _LOCK_RETRIES - 1:
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
        rows, refused = self._insert(messages, leased=False)
        return len(rows), refused

    def persist_leased(self, messages: Sequence[Message]) -> tuple[list[OutboxRow], list[Message]]:
        """Store ``messages`` already leased to this owner (their first attempt is counted).

        The caller delivers the returned rows from memory (no claim, no decoding) and settles
        them; if it dies first, the lease expires and another process delivers them.

        Returns:
            The stored rows (with the very message objects given), and the refused messages.

        Raises:
            OutboxError: If nothing could be written.
        """
        return self._insert(messages, leased=True)

    def _insert(
        self, messages: Sequence[Message], *, leased: bool
    ) -> tuple[list[OutboxRow], list[Message]]:
        if not messages:
            return [], []
        now = time.time()
        owner, until, attempts = (self.owner, now + self.lease, 1) if leased else (None, None, 0)
        encoded = [
            (m.message_id, json.dumps(message_to_data(m), separators=(",", ":"))) for m in messages
        ]

        def work(conn: sqlite3.Connection) -> list[int]:
            total = conn.execute(
                "SELECT coalesce(sum(value), 0) FROM outbox_meta "
                "WHERE key LIKE 'rows:%' OR key LIKE 'dead:%'"
            ).fetchone()[0]
            stored = encoded[: max(self.max_rows - int(total), 0)]
            before = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
            conn.executemany(
                "INSERT INTO outbox (channel, message_id, body, created_at, attempts, "
                "lease_owner, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(self.channel, mid, body, now, attempts, owner, until) for mid, body in stored],
            )
            _add_rows(conn, f"rows:{self.channel}", len(stored))
            if not leased or not stored:
                return [0] * len(stored)
            last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            if last == before + len(stored):  # the usual case: ids follow the largest one
                return list(range(before + 1, last + 1))
            by_id = dict(  # ids at the top of the range are chosen at random: look them up
                conn.execute(
                    "SELECT message_id, id FROM outbox WHERE lease_owner = ? AND created_at = ?",
                    (owner, now),
                ).fetchall()
            )
            return [by_id[mid] for mid, _ in stored]

        ids = self._retrying(work)
        rows = [
            OutboxRow(row_id, message, attempts, now)
            for row_id, message in zip(ids, messages, strict=False)
        ]
        return rows, list(messages[len(ids) :])

    def pending(self) -> int:
        """Messages of this channel in the file (leased ones included), from a counter."""
        rows = self._read("SELECT value FROM outbox_meta WHERE key = ?", (f"rows:{self.channel}",))
        return int(rows[0][0]) if rows and rows[0][0] else 0

    def claim(self, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows of this channel to this owner, oldest first."""
        now = time.time()

        def work(conn: sqlite3.Connection) -> list[tuple[int, str, int, float, int]]:
            return conn.execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1 "
                f"WHERE id IN (SELECT id FROM outbox WHERE {_CLAIMABLE} ORDER BY id LIMIT ?) "
                "RETURNING id, body, attempts, created_at, strikes",
                (self.owner, now + self.lease, self.channel, now, now, limit),
            ).fetchall()

        return [
            OutboxRow(row_id, _decode(body), attempts, created, strikes)
            for row_id, body, attempts, created, strikes in sorted(self._retrying(work))
        ]

    def renew(self) -> int:
        """Extend this owner's leases by ``lease`` from now (a heartbeat); return how many."""
        until = time.time() + self.lease

        def work(conn: sqlite3.Connection) -> int:
            _set_meta(conn, f"seen:{self.channel}", time.time())
            return conn.execute(
                "UPDATE outbox SET lease_until = ? WHERE lease_owner = ?", (until, self.owner)
            ).rowcount

        return self._retrying(work)

    def settle(
        self,
        done: Sequence[int],
        retry: Sequence[tuple[int, float, int]] = (),
        dead: Sequence[tuple[int, str]] = (),
        error: str | None = None,
        *,
        identity: tuple[int, int] | None = None,
    ) -> bool:
        """Record what an attempt did, in one transaction.

        Args:
            done: Rows to delete (delivered, refused, too large).
            retry: ``(row id, next attempt at, strikes to add)`` for rows to hand back; only
                rows this owner still leases are changed.
            dead: ``(row id, reason)`` for rows to set aside as dead (kept, never claimed).
            error: The error to record as the file's ``last_error``.
            identity: The file identity the rows were read from; if the file was replaced
                since, nothing is written (the ids would name other rows).

        Returns:
            Whether it was written.
        """

        def work(conn: sqlite3.Connection) -> bool:
            if identity is not None and identity != self.identity:
                return False  # the rows were read from a file that has been replaced
            deleted: dict[str, int] = {}
            for chunk in _chunks(done):
                marks = ",".join("?" * len(chunk))
                for (channel,) in conn.execute(
                    f"DELETE FROM outbox WHERE id IN ({marks}) AND dead IS NULL RETURNING channel",
                    chunk,
                ).fetchall():
                    deleted[channel] = deleted.get(channel, 0) + 1
            for channel, count in deleted.items():
                _add_rows(conn, f"rows:{channel}", -count)
            conn.executemany(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?, "
                "strikes = strikes + ? WHERE id = ? AND lease_owner = ?",
                [(when, strikes, row_id, self.owner) for row_id, when, strikes in retry],
            )
            buried: dict[str, int] = {}
            for row_id, reason in dead:
                for (channel,) in conn.execute(
                    "UPDATE outbox SET dead = ?, lease_owner = NULL, lease_until = NULL "
                    "WHERE id = ? AND dead IS NULL RETURNING channel",
                    (reason, row_id),
                ).fetchall():
                    buried[channel] = buried.get(channel, 0) + 1
            for channel, count in buried.items():
                _add_rows(conn, f"rows:{channel}", -count)
                _add_rows(conn, f"dead:{channel}", count)
            if error is not None:
                _set_meta(conn, "last_error", error)
                _set_meta(conn, "last_error_at", time.time())
            return True

        if done or retry or dead or error is not None:
            return self._retrying(work)
        return True

    def due_before(self, when: float) -> bool:
        """Whether a row of this channel becomes claimable by ``when`` (Unix time)."""
        rows = self._read(
            "SELECT 1 FROM outbox WHERE channel = ? AND dead IS NULL "
            "AND max(next_attempt_at, coalesce(lease_until, 0)) <= ? LIMIT 1",
            (self.channel, when),
        )
        return bool(rows)

    def status(self) -> OutboxStatus:
        """What the whole file holds, counted exactly (every channel)."""
        now = time.time()
        channels: dict[str, int] = {}
        dead: dict[str, int] = {}
        for channel, is_dead, count in self._read(
            "SELECT channel, dead IS NOT NULL, count(*) FROM outbox GROUP BY 1, 2"
        ):
            (dead if is_dead else channels)[str(channel)] = int(count)
        ((leased, oldest),) = self._read(
            "SELECT count(lease_until > ? OR NULL), min(created_at) FROM outbox WHERE dead IS NULL",
            (now,),
        )
        meta: dict[str, Any] = dict(
            self._read(
                "SELECT key, value FROM outbox_meta "
                "WHERE key LIKE 'last_error%' OR key LIKE 'seen:%'"
            )
        )
        error_at = meta.get("last_error_at")
        unserved = {
            channel: count
            for channel, count in channels.items()
            if now - float(meta.get(f"seen:{channel}") or 0.0) > UNSERVED_AFTER
        }
        return OutboxStatus(
            path=self.path,
            pending=sum(channels.values()),
            leased=int(leased),
            oldest_age=None if oldest is None else max(now - float(oldest), 0.0),
            channels=channels,
            last_error=None if meta.get("last_error") is None else str(meta["last_error"]),
            last_error_at=None if error_at is None else float(error_at),
            dead=dead,
            unserved=unserved,
        )

    def unserved(self, served: set[str], after: float) -> dict[str, int]:
        """Rows per channel outside ``served`` that no process served for ``after`` seconds."""
        now = time.time()
        seen: dict[str, float] = {
            str(key)[5:]: float(value or 0.0)
            for key, value in self._read(
                "SELECT key, value FROM outbox_meta WHERE key LIKE 'seen:%'"
            )
        }
        return {
            str(key)[5:]: int(value)
            for key, value in self._read(
                "SELECT key, value FROM outbox_meta WHERE key LIKE 'rows:%' AND value > 0"
            )
            if str(key)[5:] not in served and now - seen.get(str(key)[5:], 0.0) > after
        }

    def purge(self, *, dead_only: bool = False) -> int:
        """Delete every row of every channel (or only the dead ones); return how many."""
        where = " WHERE dead IS NOT NULL" if dead_only else ""
        keys = "'dead:%'" if dead_only else "'rows:%' OR key LIKE 'dead:%'"

        def work(conn: sqlite3.Connection) -> int:
            count = int(conn.execute(f"SELECT count(*) FROM outbox{where}").fetchone()[0])
            conn.execute(f"DELETE FROM outbox{where}")
            conn.execute(f"DELETE FROM outbox_meta WHERE key LIKE {keys}")
            return count

        return self._retrying(work)

    def vacuum(self) -> int:
        """Give free pages back to the file system (files created with ``auto_vacuum``).

        Returns:
            The free pages there were.
        """
        with self._lock:
            try:
                conn = self._connection()
                free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                if free:
                    conn.execute(f"PRAGMA incremental_vacuum({_VACUUM_PAGES})").fetchall()
                return free
            except sqlite3.Error as exc:
                raise OutboxError(_explain(self.path, exc)) from exc

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


def _add_rows(conn: sqlite3.Connection, key: str, count: int) -> None:
    conn.execute(
        "INSERT INTO outbox_meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = max(value + excluded.value, 0)",
        (key, count),
    )


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _decode(body: str) -> Message | None:
    try:
        return message_from_data(json.loads(body))
    except ValueError:  # json.JSONDecodeError is a ValueError
        return None


def _before_fork() -> None:
    """Take every store's lock, so that no thread is inside SQLite when the process forks.

    A child forked while another thread held SQLite's own mutexes would hang at its first
    SQLite call. Every SQLite call here runs under its store's lock; a lock still busy after
    a while (another process's lock being waited for) is skipped rather than holding up the
    fork.
    """
    for store in list(_stores):
        lock = store._lock
        if lock.acquire(timeout=store.busy_timeout + 1.0):
            _held.append(lock)


def _after_fork() -> None:
    while _held:
        _held.pop().release()


def _after_fork_in_child() -> None:
    _after_fork()
    _file_locks.clear()  # a lock a parent's thread held would stay held here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork_in_child
    )
