"""One in-memory batch delivered with the retry policy: attempt, sort, back off, again.

Used by the worker for batches delivered from memory (the memory strategy, and the outbox
strategy's fallbacks); the outbox records retries in its file instead
(:mod:`~instrumentor.delivery._outbox_attempt`).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from instrumentor.delivery._attempt import attempt

if TYPE_CHECKING:
    from instrumentor._messages import Message
    from instrumentor.delivery._strategy import Worker

__all__ = ["attempt_until_settled"]


def attempt_until_settled(
    worker: Worker, pending: list[Message], interrupt: threading.Event
) -> None:
    """Attempt ``pending`` until every message is delivered or given up, counting each outcome.

    ``pending`` shrinks to what is still unsettled. Between attempts it waits the policy's
    backoff (or the provider's ``Retry-After``), cut short by the shutdown deadline; once time
    is up (or ``interrupt`` is set) it returns with what is left still pending.
    """
    policy = worker.retry
    attempts = 0
    started = time.monotonic()
    while pending:
        attempts += 1
        attempt_started = time.monotonic()
        try:
            outcome = attempt(worker.transport, pending)
        finally:
            worker.record_attempt(time.monotonic() - attempt_started)
        if outcome.delivered:
            worker.count_delivered(len(outcome.delivered))
        for reason, refused in outcome.refused().items():
            worker.give_up(refused, reason, outcome.exception)
        pending[:] = outcome.retry
        if not pending:
            return
        worker.note_error(outcome.error or "delivery failed", outcome.exception)
        delay = policy.delay(attempts, outcome.retry_after)
        if policy.gives_up(attempts, time.monotonic() - started + delay):
            worker.give_up(list(pending), f"gave up after {attempts} attempts", None)
            pending.clear()
            return
        deadline = worker.deadline
        if deadline is not None:
            delay = min(delay, max(deadline - time.monotonic(), 0.0))
        worker.count_retried(len(pending))
        if interrupt.wait(delay) or worker.past_deadline():
            return  # shutting down with time up: what is left stays pending (reported)
