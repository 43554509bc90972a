"""What the ``instrumentor outbox`` command calls: status, drain and purge of an outbox file.

None of them creates a file: a mistyped path is an :class:`OutboxError`. ``outbox_status``
opens the file read-only (it writes nothing, takes no lock, frees no lease).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from instrumentor.delivery._outbox import OutboxStatus, OutboxStore
from instrumentor.delivery._outbox_attempt import RowsOutcome, attempt_rows
from instrumentor.delivery._outbox_strategy import channel_for
from instrumentor.delivery._retry import RetryPolicy
from instrumentor.delivery._stats import FlushResult

if TYPE_CHECKING:
    from instrumentor._protocols import Transport

__all__ = ["drain", "outbox_status", "purge"]


def outbox_status(path: str | os.PathLike[str]) -> OutboxStatus:
    """What the outbox at ``path`` holds, read without writing anything.

    Raises:
        OutboxError: If there is no file there or it cannot be read (the message says what
            to do).
    """
    store = OutboxStore(path, readonly=True)
    try:
        return store.status()
    finally:
        store.close()


def purge(path: str | os.PathLike[str], *, dead_only: bool = False) -> int:
    """Delete every message in the outbox at ``path`` (or only the dead ones); return how many.

    Raises:
        OutboxError: If there is no file there or it cannot be used.
    """
    store = OutboxStore(path, create=False)
    try:
        return store.purge(dead_only=dead_only)
    finally:
        store.close()


def drain(
    path: str | os.PathLike[str],
    transport: Transport,
    *,
    channel: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 60.0,
    retry: RetryPolicy | None = None,
    batch_size: int = 100,
) -> FlushResult:
    """Deliver one channel's messages in the outbox at ``path`` through ``transport`` now.

    Rows leased by a live process are left to it. Retryable failures are retried with
    ``retry``'s backoff until ``timeout``; refused messages are deleted and counted as failed,
    and a message that keeps failing alone is set aside as dead (``retry.max_attempts``).

    Args:
        path: The outbox file.
        transport: Where to deliver (e.g. an ``AccoilTransport`` with the production key).
        channel: The channel to drain (``outbox_status(path).channels`` lists them); by
            default the one ``transport`` writes to (:func:`channel_for`). Rows of another
            channel were stored for another key or endpoint: name it on purpose.
        progress: Called with ``(done, total)`` after each batch.
        timeout: Seconds to try for at most.
        retry: The backoff between failed attempts (default :class:`RetryPolicy`).
        batch_size: Messages per delivery.

    Returns:
        Delivered and failed messages, and what that channel still holds (``in_outbox``: all
        of it).

    Raises:
        OutboxError: If there is no file there or it cannot be used.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    store = OutboxStore(path, channel=channel or channel_for(transport), create=False)
    try:
        run = _Drain(store, transport, retry or RetryPolicy(), progress)
        run.until(deadline, batch_size)
        left = store.pending()
    finally:
        store.close()
    return FlushResult(run.delivered, run.failed, left, left)


class _Drain:
    """One drain's progress: what was delivered and failed, and whether the provider is up."""

    def __init__(
        self,
        store: OutboxStore,
        transport: Transport,
        policy: RetryPolicy,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.store, self.transport, self.policy, self.progress = store, transport, policy, progress
        self.delivered = self.failed = 0
        self.provider_up = True
        self.total = store.pending()

    def until(self, deadline: float, batch_size: int) -> None:
        """Claim, deliver and settle batches until none is due before ``deadline``."""
        while time.monotonic() < deadline:
            rows = self.store.claim(batch_size)
            if not rows:
                if not self.store.due_before(time.time() + _remaining(deadline)):
                    break
                time.sleep(min(0.05, _remaining(deadline)))
                continue
            result = attempt_rows(
                self.transport,
                rows,
                policy=self.policy,
                dead_after=self.policy.max_attempts,
                provider_up=self.provider_up,
            )
            result.settle(self.store, self.store.identity)
            self.count(result)

    def count(self, result: RowsOutcome) -> None:
        """Count one settled attempt, and report progress."""
        outcome = result.outcome
        self.delivered += len(outcome.delivered)
        self.failed += len(result.done) - len(outcome.delivered) + len(result.dead)
        if outcome.delivered or outcome.failed:
            self.provider_up = True
        elif result.provider_down:
            self.provider_up = False
        if self.progress is not None:
            self.progress(self.delivered + self.failed, self.total)


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)
