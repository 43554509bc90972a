"""One delivery attempt, and the sorting of its outcome: delivered, retry, refused, too large.

Every queue backend makes attempts and decides what to do with each message afterwards: the
in-memory destination retries in a loop, the SQLite outbox records the outcome in its file, a
Celery task retries itself. They all call :func:`attempt`, which never raises and reports each
message once, in exactly one list of an :class:`Outcome`:

* ``delivered``: accepted by the provider;
* ``retry``: worth another attempt (outages, timeouts, 408/429/5xx, a transport bug);
* ``failed``: refused for good (other 4xx), with the reason (a reason marked
  :data:`~instrumentor.exceptions.INVALID_MESSAGE`: the message cannot be encoded);
* ``too_large``: too large to send even alone (a 413 splits a batch first).

A :class:`~instrumentor.exceptions.PartialDeliveryError` is matched to the batch by
``message_id`` (a transport may list copies); if it lists an id the batch does not hold, the
messages it does not refuse are retried rather than guessed delivered. The lists hold the very
objects passed in, so callers can map them back to their own records with ``id()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from instrumentor.exceptions import (
    INVALID_MESSAGE,
    TOO_LARGE,
    PartialDeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

if TYPE_CHECKING:
    from instrumentor._messages import Message
    from instrumentor._protocols import Transport

__all__ = ["Outcome", "attempt", "describe", "drop_reason", "is_invalid", "is_too_large"]


def is_too_large(reason: str) -> bool:
    """Whether a give-up ``reason`` means "too large to send alone" (a drop, not a failure)."""
    return reason == "too_large" or f"({TOO_LARGE})" in reason


def is_invalid(reason: str) -> bool:
    """Whether a give-up ``reason`` means "this message cannot be encoded" (a drop, too)."""
    return reason == "invalid_message" or f"({INVALID_MESSAGE})" in reason


def drop_reason(reason: str) -> str | None:
    """The ``dropped`` counter a give-up ``reason`` counts in, or ``None`` for ``failed``."""
    if is_too_large(reason):
        return "too_large"
    return "invalid_message" if is_invalid(reason) else None


def describe(exc: BaseException) -> str:
    """An error's text, never raising (a broken ``__str__`` is not ours to fix here)."""
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__


@dataclass
class Outcome:
    """What one attempt did with each message.

    Attributes:
        delivered: Messages the provider accepted.
        retry: Messages worth another attempt.
        failed: Messages refused for good, with the reason.
        too_large: Messages too large to send even alone.
        suspects: Of ``retry``, the messages that failed alone while others of the same
            attempt were accepted (only with ``isolate=True``): the message, not the provider,
            is the likely cause.
        retry_after: What the provider asked to wait, in seconds, if it did.
        error: The last error's text (never containing a key), if any.
        exception: The last error, if any.
    """

    delivered: list[Message] = field(default_factory=list)
    retry: list[Message] = field(default_factory=list)
    failed: list[tuple[Message, str]] = field(default_factory=list)
    too_large: list[Message] = field(default_factory=list)
    suspects: list[Message] = field(default_factory=list)
    retry_after: float | None = None
    error: str | None = None
    exception: BaseException | None = None

    def refused(self) -> dict[str, list[Message]]:
        """The messages given up (``failed`` and ``too_large``), grouped by reason."""
        grouped: dict[str, list[Message]] = {}
        for message, reason in self.failed:
            grouped.setdefault(reason, []).append(message)
        if self.too_large:
            grouped["too_large"] = list(self.too_large)
        return grouped

    def merge(self, other: Outcome) -> None:
        """Add ``other``'s messages to this outcome's (its error, if any, becomes the last)."""
        self.delivered += other.delivered
        self.retry += other.retry
        self.failed += other.failed
        self.too_large += other.too_large
        self.suspects += other.suspects
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, other.retry_after)
        if other.exception is not None:
            self.error, self.exception = other.error, other.exception

    def all_retried(self, count: int) -> bool:
        """Whether all ``count`` messages attempted are to be retried (nothing else happened)."""
        return len(self.retry) == count and not (self.delivered or self.failed or self.too_large)


def attempt(transport: Transport, messages: Sequence[Message], *, isolate: bool = False) -> Outcome:
    """Deliver ``messages`` once (a 413 splits them); sort what happened. Never raises.

    Args:
        transport: Where to deliver.
        messages: The batch.
        isolate: When the whole batch fails with a retryable error, try its halves (and the
            failing half's halves, while the other half is accepted) to find a message that
            fails alone. Costs two more requests when the provider is simply down; use it for
            batches that already failed before.

    Returns:
        Each message in one list of the :class:`Outcome`.
    """
    outcome = Outcome()
    if not messages:
        return outcome
    _once(transport, list(messages), outcome)
    if isolate and len(messages) > 1 and outcome.all_retried(len(messages)):
        retry_after = outcome.retry_after
        outcome.retry.clear()
        _isolate(transport, list(messages), outcome, sibling_accepted=False)
        if retry_after is not None:
            outcome.retry_after = max(outcome.retry_after or 0.0, retry_after)
    return outcome


def _isolate(
    transport: Transport, messages: list[Message], outcome: Outcome, *, sibling_accepted: bool
) -> None:
    """``messages`` failed together: try each half, descend into the one that alone fails."""
    if len(messages) == 1:
        outcome.retry.extend(messages)
        if sibling_accepted:
            outcome.suspects.extend(messages)
        return
    middle = len(messages) // 2
    halves = [messages[:middle], messages[middle:]]
    parts = [Outcome(), Outcome()]
    for half, part in zip(halves, parts, strict=True):
        _once(transport, half, part)
    whole = [part.all_retried(len(half)) for half, part in zip(halves, parts, strict=True)]
    for half, part, failed_whole in zip(halves, parts, whole, strict=True):
        if failed_whole and not all(whole):  # the other half was accepted (or refused)
            part.retry.clear()
            outcome.merge(part)
            _isolate(transport, half, outcome, sibling_accepted=True)
        else:
            outcome.merge(part)


def _once(transport: Transport, messages: list[Message], outcome: Outcome) -> None:
    """One call of ``transport.deliver`` (more if a 413 splits the batch)."""
    try:
        transport.deliver(messages)
    except PayloadTooLargeError as exc:
        if len(messages) == 1:
            outcome.too_large.extend(messages)
            outcome.error, outcome.exception = describe(exc), exc
        else:
            middle = len(messages) // 2
            _once(transport, messages[:middle], outcome)
            _once(transport, messages[middle:], outcome)
    except PartialDeliveryError as exc:
        _sort_partial(messages, exc, outcome)
    except RetryableDeliveryError as exc:
        outcome.retry.extend(messages)
        if exc.retry_after is not None:
            outcome.retry_after = max(outcome.retry_after or 0.0, exc.retry_after)
        outcome.error, outcome.exception = describe(exc), exc
    except PermanentDeliveryError as exc:
        reason = describe(exc)
        outcome.failed.extend((message, reason) for message in messages)
        outcome.error, outcome.exception = reason, exc
    except Exception as exc:  # a transport bug: retried like an outage
        outcome.retry.extend(messages)
        outcome.error = f"transport raised {type(exc).__name__}: {describe(exc)}"
        outcome.exception = exc
    else:
        outcome.delivered.extend(messages)


def _sort_partial(messages: list[Message], exc: PartialDeliveryError, outcome: Outcome) -> None:
    held = {message.message_id for message in messages}
    retry = {message.message_id for message in exc.retry}
    failed = {message.message_id: reason for message, reason in exc.failed}
    unknown = (retry | failed.keys()) - held
    for message in messages:
        key = message.message_id
        if key in failed:
            reason = failed[key]
            if is_too_large(reason):
                outcome.too_large.append(message)
            else:
                outcome.failed.append((message, reason))
        elif key in retry or unknown:  # an id we do not hold: retry rather than guess
            outcome.retry.append(message)
        else:
            outcome.delivered.append(message)
    if exc.retry_after is not None:
        outcome.retry_after = max(outcome.retry_after or 0.0, exc.retry_after)
    if retry or failed:
        outcome.error, outcome.exception = describe(exc), exc
