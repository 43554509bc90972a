"""One attempt on outbox rows, and what to write back: shared by the destination and ``drain``.

Retryable failures never give a row up (an outage is ridden out, bounded by ``max_rows``), but
each row waits its own backoff (``next_attempt_at``), so newer rows flow while it waits. A
batch that already failed is tried in halves to isolate a message that fails alone
(:func:`~instrumentor.delivery._attempt.attempt` with ``isolate``). A failure is blamed on the
message itself (a *strike*) when its batch-mates were accepted in the same attempt, or when it
was tried alone while the provider was otherwise accepting messages; after ``dead_after``
strikes the row is set aside as *dead*: counted failed, kept in the file, never claimed again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from instrumentor.delivery._attempt import Outcome, attempt

if TYPE_CHECKING:
    from instrumentor._messages import Message
    from instrumentor._protocols import Transport
    from instrumentor.delivery._outbox import OutboxRow, OutboxStore
    from instrumentor.delivery._retry import RetryPolicy

__all__ = ["RowsOutcome", "attempt_rows"]


@dataclass
class RowsOutcome:
    """What one attempt on outbox rows did, and the writes that record it.

    Attributes:
        outcome: The attempt's outcome, by message.
        done: Row ids to delete (delivered, refused, too large, unreadable).
        retry: ``(row id, next attempt at, strikes to add)`` for rows to hand back.
        dead: ``(row id, reason)`` for rows to set aside as dead.
        dead_messages: The messages of the ``dead`` rows.
        invalid: Rows whose stored JSON could not be read (deleted, counted as dropped).
        provider_down: Everything was retried and nothing blamed on a message: the provider
            looks unavailable.
    """

    outcome: Outcome
    done: list[int] = field(default_factory=list)
    retry: list[tuple[int, float, int]] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)
    dead_messages: list[Message] = field(default_factory=list)
    invalid: int = 0
    provider_down: bool = False

    def next_due(self) -> float | None:
        """When the first handed-back row is due again (Unix time), if any is."""
        return min((when for _, when, _ in self.retry), default=None)

    def settle(self, store: OutboxStore, identity: tuple[int, int] | None) -> bool:
        """Write the outcome to ``store`` in one transaction (see :meth:`OutboxStore.settle`).

        Raises:
            OutboxError: If it could not be written; the rows stay leased meanwhile.
        """
        return store.settle(self.done, self.retry, self.dead, self.outcome.error, identity=identity)


def attempt_rows(
    transport: Transport,
    rows: list[OutboxRow],
    *,
    policy: RetryPolicy,
    dead_after: int,
    provider_up: bool,
) -> RowsOutcome:
    """Deliver the readable ``rows`` once and sort them; never raises.

    Args:
        transport: Where to deliver.
        rows: Claimed (or just stored) rows, leased to the caller.
        policy: Gives each retried row its backoff, from its own attempt count.
        dead_after: Strikes after which a row is set aside as dead.
        provider_up: Whether the provider accepted something since it last failed as a whole
            (a row tried alone and failing then gets a strike).
    """
    readable = [row for row in rows if row.message is not None]
    messages = [row.message for row in readable if row.message is not None]
    outcome = attempt(transport, messages, isolate=any(row.attempts > 1 for row in readable))
    by_object = {id(row.message): row for row in readable}
    result = RowsOutcome(outcome, invalid=len(rows) - len(readable))
    result.done = [row.id for row in rows if row.message is None]
    settled = outcome.delivered + outcome.too_large + [m for m, _ in outcome.failed]
    result.done += [by_object[id(message)].id for message in settled]
    suspects = {id(message) for message in outcome.suspects}
    alone = len(messages) == 1 and provider_up
    now = time.time()
    for message in outcome.retry:
        row = by_object[id(message)]
        strike = 1 if id(message) in suspects or alone else 0
        if strike and row.strikes + strike >= dead_after:
            reason = (
                f"set aside as dead after {row.strikes + strike} failures blamed on the message "
                f"itself ({outcome.error or 'retryable error'})"
            )
            result.dead.append((row.id, reason))
            result.dead_messages.append(message)
        else:
            when = now + policy.delay(max(row.attempts, 1), outcome.retry_after)
            result.retry.append((row.id, when, strike))
    result.provider_down = bool(outcome.retry) and not (
        outcome.delivered or outcome.failed or outcome.too_large or suspects or alone
    )
    return result
