"""One connection to an outbox file: opened lazily, thread-safe, fork-safe, errors explained.

Every SQLite call runs under the connection's lock; write transactions of one process on one
file also queue on a per-file lock in Python (rather than in SQLite's busy handler, which
sleeps milliseconds at a time) and are tried again when another process held the file's lock
too long. Around ``fork()`` every connection's lock is taken, so that no thread is inside
SQLite when the process forks; the child forgets the parent's connections (never using nor
closing them).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from instrumentor.delivery._outbox_schema import (
    OutboxError,
    Synchronous,
    check_path,
    explain,
    missing,
    prepare,
    transaction,
)

__all__ = ["OutboxConnection"]

_LOCK_RETRIES = 3
_T = TypeVar("_T")
_inherited: list[sqlite3.Connection] = []  # a forked child's copies: never used, never closed
_connections: weakref.WeakSet[OutboxConnection] = weakref.WeakSet()
#: One lock per file for this process's write transactions.
_file_locks: dict[str, threading.Lock] = {}
_file_locks_lock = threading.Lock()
_held: list[threading.Lock] = []  # the connections' locks taken for a fork


def _close_if_owner(conn: sqlite3.Connection, pid: int) -> None:
    """Close a connection dropped without ``close()``, in the process that opened it."""
    if os.getpid() == pid:
        with suppress(sqlite3.Error):
            conn.close()


class OutboxConnection:
    """A lazily opened SQLite connection to the outbox at ``path``.

    Args:
        path: The SQLite file.
        synchronous: ``"normal"`` or ``"full"``.
        busy_timeout: Seconds a statement waits for another process's lock.
        create: Create the file when it is missing (``False``: :class:`OutboxError`).
        readonly: Open read-only (``mode=ro``): nothing is written, not even at open.
        on_open: Run inside the transaction that prepares the schema at each open.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous,
        busy_timeout: float,
        create: bool,
        readonly: bool,
        on_open: Callable[[sqlite3.Connection], None],
    ) -> None:
        self.path = path
        self.synchronous: Synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.create = create and not readonly
        self.readonly = readonly
        self._on_open = on_open
        self._file_key = os.path.abspath(path)
        self._conn: sqlite3.Connection | None = None
        # Closes the connection if it is dropped unclosed (Python 3.13 warns otherwise).
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: ``(st_dev, st_ino)`` of the file the connection is open on, or ``None``.
        self.identity: tuple[int, int] | None = None
        _connections.add(self)

    def open(self, busy_timeout: float | None = None) -> None:
        """Open the connection now, waiting ``busy_timeout`` (default: the store's) for locks.

        Raises:
            OutboxError: If the file cannot be used (see :meth:`OutboxError.is_locked`).
        """
        with self._lock:
            self._connection(busy_timeout)

    def _connection(self, busy_timeout: float | None = None) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self.after_fork()
        if self._conn is not None:
            return self._conn
        if not self.create and not os.path.exists(self.path):
            raise missing(self.path)
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
            raise OutboxError(explain(self.path, exc)) from exc
        try:
            prepare(
                conn,
                self.path,
                synchronous=self.synchronous,
                readonly=self.readonly,
                on_open=self._on_open,
            )
            stat = os.stat(self.path)
        except OutboxError:
            conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            raise OutboxError(explain(self.path, exc)) from exc
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        self.identity = (stat.st_dev, stat.st_ino)
        self._conn = conn
        self._finalizer = weakref.finalize(self, _close_if_owner, conn, os.getpid())
        self._finalizer.atexit = False  # the exit flush still needs it
        return conn

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

    def use(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the connection under its lock, SQLite errors as :class:`OutboxError`."""
        with self._lock:
            try:
                return work(self._connection())
            except sqlite3.Error as exc:
                raise OutboxError(explain(self.path, exc)) from exc

    def read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement (outside any transaction)."""
        return self.use(lambda conn: conn.execute(sql, params).fetchall())

    def write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in a write transaction, again if another process held the file's lock."""
        for attempt_number in range(_LOCK_RETRIES):
            try:
                return self._write_once(work)
            except OutboxError as exc:
                if not exc.is_locked() or attempt_number == _LOCK_RETRIES - 1:
                    raise
                time.sleep(0.05 * 2**attempt_number)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_once(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with _file_locks_lock:
            file_lock = _file_locks.setdefault(self._file_key, threading.Lock())
        with self._lock, file_lock:
            try:
                conn = self._connection()
                with transaction(conn):
                    return work(conn)
            except sqlite3.Error as exc:
                raise OutboxError(explain(self.path, exc)) from exc

    def hold_for_fork(self) -> threading.Lock | None:
        """Take the lock before a fork (a lock still busy after a while is skipped)."""
        lock = self._lock
        return lock if lock.acquire(timeout=self.busy_timeout + 1.0) else None


def _before_fork() -> None:
    """Take every connection's lock, so that no thread is inside SQLite when the process forks.

    A child forked while another thread held SQLite's own mutexes would hang at its first
    SQLite call. A lock still busy after a while (another process's lock being waited for) is
    skipped rather than holding up the fork.
    """
    for connection in list(_connections):
        lock = connection.hold_for_fork()
        if lock is not None:
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
