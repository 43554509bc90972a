"""Whole-file queries of an outbox: its status, unserved channels, purge and vacuum.

They concern every channel of the file at once (the store's queue operations concern one), and
serve ``instrumentor outbox``, ``instrumentor doctor`` and the destination's housekeeping.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from instrumentor.delivery._outbox_connection import OutboxConnection

__all__ = [
    "UNSERVED_AFTER",
    "OutboxStatus",
    "file_status",
    "purge_rows",
    "unserved_channels",
    "vacuum_file",
]

#: Seconds after which a channel with rows that no process served is reported as unserved.
UNSERVED_AFTER = 600.0
_VACUUM_PAGES = 1000  # free pages returned to the file system per incremental vacuum


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


def file_status(connection: OutboxConnection) -> OutboxStatus:
    """What the whole file holds, counted exactly (every channel)."""
    now = time.time()
    channels: dict[str, int] = {}
    dead: dict[str, int] = {}
    for channel, is_dead, count in connection.read(
        "SELECT channel, dead IS NOT NULL, count(*) FROM outbox GROUP BY 1, 2"
    ):
        (dead if is_dead else channels)[str(channel)] = int(count)
    ((leased, oldest),) = connection.read(
        "SELECT count(lease_until > ? OR NULL), min(created_at) FROM outbox WHERE dead IS NULL",
        (now,),
    )
    meta: dict[str, Any] = dict(
        connection.read(
            "SELECT key, value FROM outbox_meta WHERE key LIKE 'last_error%' OR key LIKE 'seen:%'"
        )
    )
    error_at = meta.get("last_error_at")
    unserved_now = {
        channel: count
        for channel, count in channels.items()
        if now - float(meta.get(f"seen:{channel}") or 0.0) > UNSERVED_AFTER
    }
    return OutboxStatus(
        path=connection.path,
        pending=sum(channels.values()),
        leased=int(leased),
        oldest_age=None if oldest is None else max(now - float(oldest), 0.0),
        channels=channels,
        last_error=None if meta.get("last_error") is None else str(meta["last_error"]),
        last_error_at=None if error_at is None else float(error_at),
        dead=dead,
        unserved=unserved_now,
    )


def unserved_channels(
    connection: OutboxConnection, served: set[str], after: float
) -> dict[str, int]:
    """Rows per channel outside ``served`` that no process served for ``after`` seconds."""
    now = time.time()
    seen: dict[str, float] = {
        str(key)[5:]: float(value or 0.0)
        for key, value in connection.read(
            "SELECT key, value FROM outbox_meta WHERE key LIKE 'seen:%'"
        )
    }
    return {
        str(key)[5:]: int(value)
        for key, value in connection.read(
            "SELECT key, value FROM outbox_meta WHERE key LIKE 'rows:%' AND value > 0"
        )
        if str(key)[5:] not in served and now - seen.get(str(key)[5:], 0.0) > after
    }


def purge_rows(connection: OutboxConnection, *, dead_only: bool = False) -> int:
    """Delete every row of every channel (or only the dead ones); return how many."""
    where = " WHERE dead IS NOT NULL" if dead_only else ""
    keys = "'dead:%'" if dead_only else "'rows:%' OR key LIKE 'dead:%'"

    def work(conn: sqlite3.Connection) -> int:
        count = int(conn.execute(f"SELECT count(*) FROM outbox{where}").fetchone()[0])
        conn.execute(f"DELETE FROM outbox{where}")
        conn.execute(f"DELETE FROM outbox_meta WHERE key LIKE {keys}")
        return count

    return connection.write(work)


def vacuum_file(connection: OutboxConnection) -> int:
    """Give free pages back to the file system (files created with ``auto_vacuum``).

    Returns:
        The free pages there were.
    """

    def work(conn: sqlite3.Connection) -> int:
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        if free:
            conn.execute(f"PRAGMA incremental_vacuum({_VACUUM_PAGES})").fetchall()
        return free

    return connection.use(work)
