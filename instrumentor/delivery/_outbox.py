"""The SQLite outbox: a durable queue of messages, shared safely by several processes.

Writers append batches in one transaction each (WAL mode), possibly already leased to
themselves; deliverers *claim* due rows with ``BEGIN IMMEDIATE`` and ``UPDATE … RETURNING``,
which leases them, renew the lease while an attempt runs, and delete the rows once the provider
accepted them. A process that dies mid-batch leaves leased rows that are claimable again once
the lease expires, or at once when the owner is provably dead
(:mod:`~instrumentor.delivery._outbox_owner`). Everything here runs on worker threads or in the
CLI; nothing is ever called from the caller's thread.

The pieces: the file's schema and errors (:mod:`~instrumentor.delivery._outbox_schema`), one
connection (:mod:`~instrumentor.delivery._outbox_connection`), one channel's queue operations
(:class:`OutboxStore`, here) and whole-file queries
(:mod:`~instrumentor.delivery._outbox_queries`). What the ``instrumentor outbox`` command calls
is in :mod:`instrumentor.delivery._outbox_admin`.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from instrumentor._messages import Message, message_from_data, message_to_data
from instrumentor.delivery._attempt import describe
from instrumentor.delivery._outbox_connection import OutboxConnection
from instrumentor.delivery._outbox_owner import new_owner, owner_is_dead
from instrumentor.delivery._outbox_queries import (
    UNSERVED_AFTER,
    OutboxStatus,
    file_status,
    purge_rows,
    unserved_channels,
    vacuum_file,
)
from instrumentor.delivery._outbox_schema import (
    OutboxError,
    Synchronous,
    add_rows,
    check_path,
    chunks,
    set_meta,
    touch,
)
from instrumentor.exceptions import INVALID_MESSAGE

# OutboxError, OutboxStatus, Synchronous, UNSERVED_AFTER and check_path are re-exported: the
# CLI and the doctor import them from here.
__all__ = [
    "UNSERVED_AFTER",
    "OutboxError",
    "OutboxRow",
    "OutboxStatus",
    "OutboxStore",
    "Synchronous",
    "check_path",
]

#: Called with ``(message, reason)`` for a message that cannot be stored as JSON.
OnInvalid = Callable[[Message, str], None]
_CLAIMABLE = (
    "channel = ? AND dead IS NULL AND next_attempt_at <= ? "
    "AND (lease_until IS NULL OR lease_until < ?)"
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
        self.channel = channel
        self.max_rows = max_rows
        self.synchronous: Synchronous = synchronous
        self.lease = lease
        self.busy_timeout = busy_timeout
        self.owner = owner or new_owner()
        self._db = OutboxConnection(
            self.path,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            create=create,
            readonly=readonly,
            on_open=functools.partial(_on_open, channel=channel, owner=self.owner),
        )

    # --- connection --------------------------------------------------------------------------

    @property
    def identity(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the file the connection is open on, or ``None``."""
        return self._db.identity

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
        self._db.open(busy_timeout)

    def replaced(self) -> bool:
        """Whether the file was deleted or replaced since the connection opened (a ``stat``)."""
        return self._db.replaced()

    def after_fork(self) -> None:
        """Forget the parent's connection (never used nor closed here)."""
        self._db.after_fork()

    def close(self) -> None:
        """Close the connection (this process's own only). Reopens on next use."""
        self._db.close()

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on this store's connection, under its lock; return its rows.

        For diagnostics and maintenance (e.g. a ``PRAGMA``); the queue is changed through the
        methods below.

        Raises:
            OutboxError: If SQLite failed.
        """
        return self._db.read(sql, params)

    # --- the queue ---------------------------------------------------------------------------

    def persist(
        self, messages: Sequence[Message], *, on_invalid: OnInvalid | None = None
    ) -> tuple[int, list[Message]]:
        """Store ``messages`` in one transaction, as many as ``max_rows`` leaves room for.

        Args:
            messages: The messages to store.
            on_invalid: Called with ``(message, reason)`` for each message that cannot be
                stored as JSON, which is left out (the rest is stored); by default such a
                message raises ``ValueError`` (or ``TypeError``) and nothing is stored.

        Returns:
            How many were stored, and the messages refused because the outbox was full.

        Raises:
            OutboxError: If nothing could be written (full disk, lock held too long, ...).
        """
        rows, refused = self._insert(messages, leased=False, on_invalid=on_invalid)
        return len(rows), refused

    def persist_leased(
        self, messages: Sequence[Message], *, on_invalid: OnInvalid | None = None
    ) -> tuple[list[OutboxRow], list[Message]]:
        """Store ``messages`` already leased to this owner (their first attempt is counted).

        The caller delivers the returned rows from memory (no claim, no decoding) and settles
        them; if it dies first, the lease expires and another process delivers them.
        ``on_invalid`` is as for :meth:`persist`.

        Returns:
            The stored rows (with the very message objects given), and the refused messages.

        Raises:
            OutboxError: If nothing could be written.
        """
        return self._insert(messages, leased=True, on_invalid=on_invalid)

    def _insert(
        self, messages: Sequence[Message], *, leased: bool, on_invalid: OnInvalid | None
    ) -> tuple[list[OutboxRow], list[Message]]:
        kept, encoded = _encoded(messages, on_invalid)  # what cannot be JSON is left out
        if not kept:
            return [], []
        now = time.time()
        owner, until, attempts = (self.owner, now + self.lease, 1) if leased else (None, None, 0)

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
            add_rows(conn, f"rows:{self.channel}", len(stored))
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

        ids = self._db.write(work)
        rows = [
            OutboxRow(row_id, message, attempts, now)
            for row_id, message in zip(ids, kept, strict=False)
        ]
        return rows, kept[len(ids) :]

    def pending(self) -> int:
        """Messages of this channel in the file (leased ones included), from a counter."""
        rows = self._db.read(
            "SELECT value FROM outbox_meta WHERE key = ?", (f"rows:{self.channel}",)
        )
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
            for row_id, body, attempts, created, strikes in sorted(self._db.write(work))
        ]

    def renew(self) -> int:
        """Extend this owner's leases by ``lease`` from now (a heartbeat); return how many."""
        until = time.time() + self.lease

        def work(conn: sqlite3.Connection) -> int:
            touch(conn, self.channel)
            return conn.execute(
                "UPDATE outbox SET lease_until = ? WHERE lease_owner = ?", (until, self.owner)
            ).rowcount

        return self._db.write(work)

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
            if identity is not None and identity != self._db.identity:
                return False  # the rows were read from a file that has been replaced
            _delete(conn, done)
            conn.executemany(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?, "
                "strikes = strikes + ? WHERE id = ? AND lease_owner = ?",
                [(when, strikes, row_id, self.owner) for row_id, when, strikes in retry],
            )
            _bury(conn, dead)
            if error is not None:
                set_meta(conn, "last_error", error)
                set_meta(conn, "last_error_at", time.time())
            return True

        if done or retry or dead or error is not None:
            return self._db.write(work)
        return True

    def due_before(self, when: float) -> bool:
        """Whether a row of this channel becomes claimable by ``when`` (Unix time)."""
        rows = self._db.read(
            "SELECT 1 FROM outbox WHERE channel = ? AND dead IS NULL "
            "AND max(next_attempt_at, coalesce(lease_until, 0)) <= ? LIMIT 1",
            (self.channel, when),
        )
        return bool(rows)

    # --- the whole file ------------------------------------------------------------------------

    def status(self) -> OutboxStatus:
        """What the whole file holds, counted exactly (every channel)."""
        return file_status(self._db)

    def unserved(self, served: set[str], after: float) -> dict[str, int]:
        """Rows per channel outside ``served`` that no process served for ``after`` seconds."""
        return unserved_channels(self._db, served, after)

    def purge(self, *, dead_only: bool = False) -> int:
        """Delete every row of every channel (or only the dead ones); return how many."""
        return purge_rows(self._db, dead_only=dead_only)

    def vacuum(self) -> int:
        """Give free pages back to the file system; return the free pages there were."""
        return vacuum_file(self._db)

    def __repr__(self) -> str:
        return f"OutboxStore({self.path!r}, channel={self.channel!r})"


def _on_open(conn: sqlite3.Connection, *, channel: str, owner: str) -> None:
    """At each open: mark the channel served, and free the leases of owners provably gone.

    The write proves the file is writable; see outbox_owner for "provably gone".
    """
    touch(conn, channel)
    holders = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT lease_owner FROM outbox WHERE lease_owner IS NOT NULL"
        )
    ]
    for holder in holders:
        if holder != owner and owner_is_dead(holder):
            conn.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
                (holder,),
            )


def _delete(conn: sqlite3.Connection, done: Sequence[int]) -> None:
    """Delete the settled rows ``done`` (not dead ones) and count them off their channels."""
    deleted: dict[str, int] = {}
    for chunk in chunks(done):
        marks = ",".join("?" * len(chunk))
        for (channel,) in conn.execute(
            f"DELETE FROM outbox WHERE id IN ({marks}) AND dead IS NULL RETURNING channel",
            chunk,
        ).fetchall():
            deleted[channel] = deleted.get(channel, 0) + 1
    for channel, count in deleted.items():
        add_rows(conn, f"rows:{channel}", -count)


def _bury(conn: sqlite3.Connection, dead: Sequence[tuple[int, str]]) -> None:
    """Set the rows of ``dead`` aside with their reason, moving them to the dead counters."""
    buried: dict[str, int] = {}
    for row_id, reason in dead:
        for (channel,) in conn.execute(
            "UPDATE outbox SET dead = ?, lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND dead IS NULL RETURNING channel",
            (reason, row_id),
        ).fetchall():
            buried[channel] = buried.get(channel, 0) + 1
    for channel, count in buried.items():
        add_rows(conn, f"rows:{channel}", -count)
        add_rows(conn, f"dead:{channel}", count)


def _encoded(
    messages: Sequence[Message], on_invalid: OnInvalid | None
) -> tuple[list[Message], list[tuple[str, str]]]:
    """The messages that can be stored, and their ``(message id, JSON)``; see ``on_invalid``."""
    kept: list[Message] = []
    encoded: list[tuple[str, str]] = []
    for message in messages:
        try:
            body = json.dumps(message_to_data(message), separators=(",", ":"))
        except Exception as exc:  # e.g. an int too long for text: this message only
            if on_invalid is None:
                raise
            text = f"{type(exc).__name__}: {describe(exc)}"[:200]
            on_invalid(message, f"cannot be stored as JSON ({text}) ({INVALID_MESSAGE})")
            continue
        kept.append(message)
        encoded.append((message.message_id, body))
    return kept, encoded


def _decode(body: str) -> Message | None:
    try:
        return message_from_data(json.loads(body))
    except ValueError:  # json.JSONDecodeError is a ValueError
        return None
