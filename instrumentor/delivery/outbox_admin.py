"""What the ``instrumentor outbox`` command calls: status, drain and purge of an outbox file."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from instrumentor.delivery.attempt import attempt
from instrumentor.delivery.destination import FlushResult
from instrumentor.delivery.outbox import OutboxStatus, OutboxStore
from instrumentor.delivery.retry import RetryPolicy

if TYPE_CHECKING:
    from instrumentor.transports.base import Transport

__all__ = ["drain", "outbox_status", "purge"]


def _channels(path: str) -> list[str]:
    store = OutboxStore(path)
    try:
        return [str(r[0]) for r in store._read("SELECT DISTINCT channel FROM outbox")]
    finally:
        store.close()


def outbox_status(path: str | os.PathLike[str]) -> OutboxStatus:
    """What the outbox at ``path`` holds.

    Raises:
        OutboxError: If the file cannot be used (the message says what to do).
    """
    store = OutboxStore(path)
    try:
        return store.status()
    finally:
        store.close()


def purge(path: str | os.PathLike[str]) -> int:
    """Delete every message in the outbox at ``path``; return how many there were.

    Raises:
        OutboxError: If the file cannot be used.
    """
    store = OutboxStore(path)
    try:
        return store.purge()
    finally:
        store.close()


def drain(
    path: str | os.PathLike[str],
    transport: Transport,
    *,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 60.0,
    retry: RetryPolicy | None = None,
    batch_size: int = 100,
) -> FlushResult:
    """Deliver everything in the outbox at ``path`` through ``transport`` now, every channel.

    Rows leased by a live process are left to it. Retryable failures are retried with
    ``retry``'s backoff until ``timeout``; refused messages are deleted and counted as failed.

    Args:
        path: The outbox file.
        transport: Where to deliver (e.g. an ``AccoilTransport`` with the production key).
        progress: Called with ``(done, total)`` after each batch.
        timeout: Seconds to try for at most.
        retry: The backoff between failed attempts (default :class:`RetryPolicy`).
        batch_size: Messages per delivery.

    Returns:
        Delivered and failed messages, and what is still pending (``in_outbox``: all of it).

    Raises:
        OutboxError: If the file cannot be used.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    policy = retry or RetryPolicy()
    result = FlushResult()
    total = outbox_status(path).pending
    for channel in _channels(os.fspath(path)):
        store = OutboxStore(path, channel=channel)
        try:
            while time.monotonic() < deadline:
                rows = store.claim(batch_size)
                if not rows:
                    break
                outcome = attempt(transport, [r for r in rows if r.message is not None])
                done = [r.id for r in rows if r.message is None] + outcome.settled_ids()
                wait = 0.0
                if outcome.retry:
                    attempts = max(r.attempts for r in outcome.retry)
                    wait = policy.delay(attempts, outcome.retry_after)
                store.settle(done, [r.id for r in outcome.retry], time.time(), outcome.error)
                result = result + FlushResult(
                    len(outcome.delivered), len(done) - len(outcome.delivered)
                )
                if progress is not None:
                    progress(result.delivered + result.failed, total)
                if wait:
                    time.sleep(min(wait, max(deadline - time.monotonic(), 0.0)))
        finally:
            store.close()
    left = outbox_status(path).pending
    return FlushResult(result.delivered, result.failed, left, left)
