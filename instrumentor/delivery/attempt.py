"""One delivery attempt of a batch, sorted into what was settled and what to try again.

The in-memory destination retries a batch in a loop on its worker; the outbox and the Celery
delivery task instead make one attempt, record the outcome (delete rows or hand them back; a
Celery retry or a dead letter) and move on, so that a crash at any moment leaves every message
either delivered or still queued. A 413 splits the batch within the attempt, as the in-memory
destination does. The items are anything with an ``id`` and a ``message`` (outbox rows, or the
numbered messages of a Celery batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from instrumentor.delivery.destination import _describe, is_too_large
from instrumentor.exceptions import (
    PartialDeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

if TYPE_CHECKING:
    from instrumentor.messages import Message
    from instrumentor.transports.base import Transport

__all__ = ["Item", "Outcome", "attempt"]


class Item(Protocol):
    """What an attempt delivers: a message (``None`` if unreadable) and an id to settle it by."""

    @property
    def id(self) -> int:
        """The item's id (an outbox row id, a position in a batch)."""

    @property
    def message(self) -> Message | None:
        """The message to deliver."""


T = TypeVar("T", bound=Item)


@dataclass
class Outcome(Generic[T]):
    """What one attempt did with each item.

    Attributes:
        delivered: Rows the provider accepted.
        failed: Rows refused for good, with the reason.
        too_large: Rows too large to send even alone (dropped).
        retry: Rows to try again.
        retry_after: What the provider asked to wait, in seconds, if it did.
        error: The last error's text (never containing a key), if any.
        exception: The last error, if any.
    """

    delivered: list[T] = field(default_factory=list)
    failed: list[tuple[T, str]] = field(default_factory=list)
    too_large: list[T] = field(default_factory=list)
    retry: list[T] = field(default_factory=list)
    retry_after: float | None = None
    error: str | None = None
    exception: BaseException | None = None

    def settled_ids(self) -> list[int]:
        """Ids of the rows to delete: delivered, refused or too large."""
        return [r.id for r in self.delivered + self.too_large] + [r.id for r, _ in self.failed]

    def _refused(self, row: T, reason: str) -> None:
        if is_too_large(reason):
            self.too_large.append(row)
        else:
            self.failed.append((row, reason))

    def _noted(self, text: str, exc: BaseException) -> None:
        self.error, self.exception = text, exc


def attempt(transport: Transport, rows: list[T]) -> Outcome[T]:
    """Deliver ``rows`` (whose messages are set) once; never raises."""
    outcome: Outcome[T] = Outcome()
    if rows:
        _attempt_into(transport, rows, outcome)
    return outcome


def _attempt_into(transport: Transport, rows: list[T], outcome: Outcome[T]) -> None:
    try:
        transport.deliver([row.message for row in rows if row.message is not None])
    except PayloadTooLargeError as exc:
        if len(rows) == 1:
            outcome.too_large.append(rows[0])
            outcome._noted(_describe(exc), exc)
        else:
            middle = len(rows) // 2
            _attempt_into(transport, rows[:middle], outcome)
            _attempt_into(transport, rows[middle:], outcome)
    except PartialDeliveryError as exc:
        retry = {id(message) for message in exc.retry}
        failed = {id(message): reason for message, reason in exc.failed}
        for row in rows:
            key = id(row.message)
            if key in failed:
                outcome._refused(row, failed[key])
            elif key in retry:
                outcome.retry.append(row)
            else:
                outcome.delivered.append(row)
        if exc.retry_after is not None:
            outcome.retry_after = exc.retry_after
        outcome._noted(_describe(exc), exc)
    except RetryableDeliveryError as exc:
        outcome.retry.extend(rows)
        outcome.retry_after = exc.retry_after
        outcome._noted(_describe(exc), exc)
    except PermanentDeliveryError as exc:
        for row in rows:
            outcome._refused(row, _describe(exc))
        outcome._noted(_describe(exc), exc)
    except Exception as exc:  # a transport bug: retried like an outage
        outcome.retry.extend(rows)
        outcome._noted(f"transport raised {type(exc).__name__}: {_describe(exc)}", exc)
    else:
        outcome.delivered.extend(rows)
