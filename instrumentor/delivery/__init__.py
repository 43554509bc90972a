"""Queued delivery: destinations, retries, the SQLite outbox and the queue backend protocol.

The Celery backend lives in :mod:`instrumentor.celery`.
"""

from __future__ import annotations

from instrumentor._settings import QueueBackend
from instrumentor.delivery._destination import (
    Destination,
    DestinationStats,
    FlushResult,
    flush_all,
    shutdown_all,
)
from instrumentor.delivery._inline import InlineDestination
from instrumentor.delivery._outbox import OutboxError, OutboxStatus
from instrumentor.delivery._outbox_admin import drain, outbox_status, purge
from instrumentor.delivery._outbox_destination import OutboxDestination
from instrumentor.delivery._retry import RetryPolicy

__all__ = [
    "Destination",
    "DestinationStats",
    "FlushResult",
    "InlineDestination",
    "OutboxDestination",
    "OutboxError",
    "OutboxStatus",
    "QueueBackend",
    "RetryPolicy",
    "aflush",
    "drain",
    "flush",
    "flush_all",
    "outbox_status",
    "purge",
    "shutdown",
    "shutdown_all",
]


def flush(timeout: float = 5.0) -> FlushResult:
    """Deliver what every destination holds now, waiting at most ``timeout`` seconds in total.

    Never raises; returns what was delivered and failed meanwhile and what is still pending.
    """
    return flush_all(timeout)


async def aflush(timeout: float = 5.0) -> FlushResult:
    """:func:`flush` for asyncio: waits in a thread, so the event loop keeps running."""
    import asyncio

    return await asyncio.to_thread(flush_all, timeout)


def shutdown(timeout: float = 5.0) -> FlushResult:
    """Flush and stop every destination within ``timeout`` seconds in total; idempotent.

    Events tracked afterwards are dropped and counted (reason ``shutdown``). Runs by itself at
    interpreter exit, bounded by ``exit_timeout``.
    """
    return shutdown_all(timeout)
