"""Queued delivery: destinations, their queue strategies, retries and the SQLite outbox.

A :class:`Destination` is one delivery worker (a bounded queue the caller appends to, counters,
flush and shutdown, fork and exit) composed with a queue strategy: :class:`MemoryStrategy` (the
default) delivers from memory, :class:`OutboxStrategy` keeps what is queued in an SQLite file
until it is delivered. :class:`QueueStrategy` is the interface between them. The Celery
backend lives in :mod:`instrumentor.celery`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from instrumentor._lazy import lazy_names
from instrumentor._settings import QueueBackend
from instrumentor.delivery._destination import Destination
from instrumentor.delivery._inline import InlineDestination
from instrumentor.delivery._lifecycle import flush_all, shutdown_all
from instrumentor.delivery._retry import RetryPolicy
from instrumentor.delivery._stats import DestinationStats, FlushResult
from instrumentor.delivery._strategy import MemoryStrategy, QueueStrategy, Worker

if TYPE_CHECKING:  # loaded on first use (see __getattr__); type checkers and IDEs see them here
    from instrumentor.delivery._outbox import OutboxError, OutboxStatus
    from instrumentor.delivery._outbox_admin import drain, outbox_status, purge
    from instrumentor.delivery._outbox_strategy import OutboxDestination, OutboxStrategy

__all__ = [
    "Destination",
    "DestinationStats",
    "FlushResult",
    "InlineDestination",
    "MemoryStrategy",
    "OutboxDestination",
    "OutboxError",
    "OutboxStatus",
    "OutboxStrategy",
    "QueueBackend",
    "QueueStrategy",
    "RetryPolicy",
    "Worker",
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
    # Lazy on purpose: asyncio is a large import that only asyncio applications need, and they
    # have imported it already.
    import asyncio

    return await asyncio.to_thread(flush_all, timeout)


def shutdown(timeout: float = 5.0) -> FlushResult:
    """Flush and stop every destination within ``timeout`` seconds in total; idempotent.

    Events tracked afterwards are dropped and counted (reason ``shutdown``). Runs by itself at
    interpreter exit, bounded by ``exit_timeout``.
    """
    return shutdown_all(timeout)


#: The SQLite outbox's names, each imported from its module on first use: SQLite and the
#: outbox machinery load only in a process that uses an outbox (or inspects one).
_LAZY = {
    "OutboxDestination": "instrumentor.delivery._outbox_strategy",
    "OutboxError": "instrumentor.delivery._outbox",
    "OutboxStatus": "instrumentor.delivery._outbox",
    "OutboxStrategy": "instrumentor.delivery._outbox_strategy",
    "drain": "instrumentor.delivery._outbox_admin",
    "outbox_status": "instrumentor.delivery._outbox_admin",
    "purge": "instrumentor.delivery._outbox_admin",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
