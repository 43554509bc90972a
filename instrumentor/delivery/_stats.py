"""What a destination counts, and what its flush and shutdown report.

Each destination keeps its counters in a :class:`Counts`, which is also kept in this process's
history: the totals of :func:`totals` never shrink when a destination is replaced or collected.
A forked child starts a history of its own (:func:`forget_history`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "Counts",
    "DestinationStats",
    "FlushResult",
    "forget_history",
    "new_counts",
    "snapshot",
    "totals",
]


class Counts:
    """One destination's counters; kept after the destination is gone, so totals never shrink.

    Attributes:
        dequeued: Events taken off the queue.
        persisted: Messages committed to an outbox.
        outbox_rows: Messages waiting in the outbox now, for the destination's channel.
        delivered: Messages the provider accepted.
        retried: Message deliveries attempted again.
        failed: Messages given up.
        in_flight: Messages taken off the queue and not settled yet.
        dropped: Events or messages dropped, by reason.
        last_error: The last delivery error, without secrets.
    """

    __slots__ = (
        "delivered",
        "dequeued",
        "dropped",
        "failed",
        "in_flight",
        "last_error",
        "outbox_rows",
        "persisted",
        "retried",
    )

    def __init__(self) -> None:
        self.dequeued = 0
        self.persisted = 0
        self.outbox_rows = 0
        self.delivered = 0
        self.retried = 0
        self.failed = 0
        self.in_flight = 0
        self.dropped: Counter[str] = Counter()
        self.last_error: str | None = None


_history: list[Counts] = []  # every destination's counters in this process


def new_counts() -> Counts:
    """Fresh counters for a destination, added to this process's history."""
    counts = Counts()
    _history.append(counts)
    return counts


def forget_history() -> None:
    """In a forked child: the parent's history is the parent's."""
    _history.clear()


def totals() -> Counter[str]:
    """The counters of every destination this process has had, summed (no queue depth)."""
    total: Counter[str] = Counter()
    for counts in list(_history):
        total["enqueued"] += counts.dequeued
        total["delivered"] += counts.delivered
        total["retried"] += counts.retried
        total["failed"] += counts.failed
        total["in_flight"] += max(counts.in_flight, 0)
        total["persisted"] += counts.persisted
        total["outbox_rows"] += max(counts.outbox_rows, 0)
        for reason, number in counts.dropped.items():
            total[f"dropped.{reason}"] += number
    return total


@dataclass(frozen=True)
class FlushResult:
    """What a :meth:`Destination.flush` or ``shutdown`` achieved before returning.

    Attributes:
        delivered: Messages delivered while it waited.
        failed: Messages given up while it waited.
        pending: Events (emissions) and messages still queued or being retried when it returned,
            including the messages waiting in an outbox.
        in_outbox: Of ``pending``, the messages safely in an SQLite outbox: a crash does not
            lose them, the next start delivers them. ``pending - in_outbox`` is what only
            memory holds.
    """

    delivered: int = 0
    failed: int = 0
    pending: int = 0
    in_outbox: int = 0

    def __add__(self, other: FlushResult) -> FlushResult:
        return FlushResult(
            self.delivered + other.delivered,
            self.failed + other.failed,
            self.pending + other.pending,
            self.in_outbox + other.in_outbox,
        )


@dataclass(frozen=True)
class DestinationStats:
    """A snapshot of one destination's counters.

    Attributes:
        name: The destination's name.
        enqueued: Events accepted into the queue.
        delivered: Messages the provider accepted.
        retried: Message deliveries attempted again.
        failed: Messages given up (refused for good, or retries exhausted).
        dropped: Events (``queue_full``, ``shutdown``) or messages (``too_large``,
            ``invalid_message``: one that cannot be encoded) dropped, by reason.
        queue_depth: Events waiting now.
        in_flight: Messages being delivered or waiting for a retry now.
        last_error: The last delivery error, without secrets.
        persisted: Messages committed to the outbox (0 without one).
        outbox_rows: Messages waiting in the outbox now, for this destination's channel (from
            every process sharing the file).
    """

    name: str
    enqueued: int
    delivered: int
    retried: int
    failed: int
    dropped: dict[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    in_flight: int = 0
    last_error: str | None = None
    persisted: int = 0
    outbox_rows: int = 0


def snapshot(name: str, counts: Counts, queue_depth: int) -> DestinationStats:
    """The stats of destination ``name``, from its counters and its queue's depth."""
    return DestinationStats(
        name=name,
        enqueued=counts.dequeued + queue_depth,
        delivered=counts.delivered,
        retried=counts.retried,
        failed=counts.failed,
        dropped=dict(counts.dropped),
        queue_depth=queue_depth,
        in_flight=max(counts.in_flight, 0),
        last_error=counts.last_error,
        persisted=counts.persisted,
        outbox_rows=max(counts.outbox_rows, 0),
    )
