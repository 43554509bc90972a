"""The outbox file: its schema, how it is prepared at open, and what goes wrong with it.

One table holds one row per message: its id, its
:func:`~instrumentor._messages.message_to_data` JSON, the channel (destination) it belongs to,
the lease bookkeeping (``lease_owner``, ``lease_until``, ``attempts``, ``next_attempt_at``) and
the poison bookkeeping (``strikes``: failures blamed on the message itself; ``dead``: why it
was set aside). ``outbox_meta`` holds counters per channel (``rows:<channel>``,
``dead:<channel>``), when each channel was last served (``seen:<channel>``) and the last error.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from instrumentor.exceptions import InstrumentorError

__all__ = [
    "SCHEMA_VERSION",
    "OutboxError",
    "Synchronous",
    "add_rows",
    "check_path",
    "chunks",
    "explain",
    "missing",
    "prepare",
    "set_meta",
    "touch",
    "transaction",
]

#: How hard a commit is made durable: ``"normal"`` survives a process crash (``kill -9``),
#: ``"full"`` also an OS crash or power loss, at the price of an fsync per commit.
Synchronous = Literal["normal", "full"]

SCHEMA_VERSION = 2
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
_JOURNAL_LIMIT = 64 * 1024 * 1024  # bytes the -wal file is truncated to after a checkpoint


class OutboxError(InstrumentorError):
    """The outbox file cannot be used; the message says why and what to do."""

    def is_locked(self) -> bool:
        """Whether another process held the file's lock too long (worth trying again later)."""
        cause = self.__cause__
        return isinstance(cause, sqlite3.OperationalError) and any(
            word in str(cause).lower() for word in ("locked", "busy")
        )


def explain(path: str, exc: BaseException) -> str:
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
    # a database, and explain() says what to do.


def missing(path: str) -> OutboxError:
    """The error for a file that is not there and must not be created."""
    return OutboxError(
        f"there is no outbox at {path}: check the path (the value of ANALYTICS_OUTBOX); "
        "nothing was created"
    )


def prepare(
    conn: sqlite3.Connection,
    path: str,
    *,
    synchronous: Synchronous,
    readonly: bool,
    on_open: Callable[[sqlite3.Connection], None],
) -> None:
    """Check the schema version; unless ``readonly``, create or upgrade the tables.

    ``on_open`` runs in the same write transaction (a write at open proves the file writable).

    Raises:
        OutboxError: For a schema newer than this version, or an old one opened read-only.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise OutboxError(
            f"the outbox {path} was written by a newer instrumentor (schema "
            f"{version}): upgrade, or drain it with that version first"
        )
    if readonly:
        if version < SCHEMA_VERSION:
            raise OutboxError(
                f"the outbox {path} has an older schema ({version}): open it with "
                "this version's destination (or drain) once, which upgrades it"
            )
        return
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
    conn.execute("PRAGMA journal_mode=WAL").fetchone()
    conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_LIMIT}").fetchone()
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    with transaction(conn):
        if version == 1:
            for statement in _MIGRATE_1:
                conn.execute(statement)
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        on_open(conn)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction, committed at the end, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    """Set ``outbox_meta[key]``."""
    conn.execute("INSERT OR REPLACE INTO outbox_meta (key, value) VALUES (?, ?)", (key, value))


def add_rows(conn: sqlite3.Connection, key: str, count: int) -> None:
    """Add ``count`` (possibly negative) to the counter ``outbox_meta[key]``, never below 0."""
    conn.execute(
        "INSERT INTO outbox_meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = max(value + excluded.value, 0)",
        (key, count),
    )


def chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    """``ids`` in slices small enough for one statement each."""
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def touch(conn: sqlite3.Connection, channel: str) -> None:
    """Record that ``channel`` is served now (``seen:<channel>``)."""
    set_meta(conn, f"seen:{channel}", time.time())
