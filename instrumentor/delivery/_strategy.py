"""The queue strategy interface, and the default strategy: deliver from memory.

A :class:`~instrumentor.delivery.Destination` is one *worker* composed with one *queue
strategy*. The worker owns what every destination does the same way: the caller's side (a
bounded ``deque.append`` that never blocks), the counters and metrics, the retry policy,
flush and shutdown within their deadlines, fork and exit. The strategy owns what differs:
where the queued batches go and how they are delivered from there, on the worker's thread
(:meth:`QueueStrategy.run`) and on any thread of its own.

The two meet only through public methods: a strategy uses the :class:`Worker` interface, and
the worker calls the :class:`QueueStrategy` interface. Strategies: :class:`MemoryStrategy`
(the default) and :class:`~instrumentor.delivery.OutboxStrategy` (an SQLite file).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from instrumentor.exceptions import ConfigurationError

if TYPE_CHECKING:
    from instrumentor._messages import Message
    from instrumentor._protocols import Transport
    from instrumentor.delivery._retry import RetryPolicy

__all__ = ["MemoryStrategy", "QueueStrategy", "Worker", "deliver_from_memory"]


class Worker(Protocol):
    """What a strategy may use of the destination it is attached to (its *worker*).

    :class:`~instrumentor.delivery.Destination` implements it; these are its public methods.
    """

    name: str
    transport: Transport
    retry: RetryPolicy
    batch_size: int
    linger: float

    @property
    def stopping(self) -> bool:
        """Whether shutdown has begun."""

    @property
    def deadline(self) -> float | None:
        """The shutdown deadline (monotonic), once shutdown has begun."""

    @property
    def queue_depth(self) -> int:
        """Events waiting in the queue."""

    @property
    def in_flight(self) -> int:
        """Messages taken off the queue and not settled (nor persisted) yet."""

    @property
    def outbox_rows(self) -> int:
        """Messages the strategy last counted in its outbox (see :meth:`record_outbox`)."""

    def past_deadline(self) -> bool:
        """Whether shutdown has begun and its deadline has passed."""

    def start(self) -> None:
        """Start the worker thread, if it is not running (the first event does this too)."""

    def wait_for_work(self, timeout: float | None) -> bool:
        """Sleep until a batch fills, a flush or shutdown asks, or ``timeout``; whether woken."""

    def notify_idle(self) -> None:
        """Tell those waiting in ``flush`` to look at what is pending again."""

    def should_stop(self) -> bool:
        """Whether the worker's loop should end: shutting down, and the queue empty or time up."""

    def next_batch(self) -> list[Message]:
        """Take whole events off the queue, up to ``batch_size`` messages (now in flight)."""

    def deliver(self, batch: Sequence[Message]) -> None:
        """Deliver in-flight messages with the retry policy, counting every outcome."""

    def deliver_queued(self, deadline: float | None = None) -> None:
        """Deliver from the queue on the calling thread until it is empty or time is up."""

    def count_delivered(self, count: int, *, in_flight: bool = True) -> None:
        """Count ``count`` messages the provider accepted."""

    def count_retried(self, count: int) -> None:
        """Count ``count`` messages about to be attempted again."""

    def give_up(
        self,
        messages: Sequence[Message],
        reason: str,
        error: BaseException | None,
        *,
        in_flight: bool = True,
    ) -> None:
        """Count, report and hand to ``on_drop`` messages given up for ``reason``."""

    def drop(self, item: Any, reason: str, count: int = 1) -> None:
        """Count (and report the first of each ``reason``) ``count`` dropped events or messages."""

    def note_error(self, text: str, error: BaseException | None) -> None:
        """Record ``text`` as the last error and report a ``delivery_retrying`` incident."""

    def incident(
        self, kind: str, text: str, error: BaseException | None = None, *, record: bool = False
    ) -> None:
        """Report an incident about this destination (``record``: also the last error)."""

    def record_attempt(self, seconds: float) -> None:
        """Record the duration of one delivery attempt (a metric)."""

    def record_outbox(self, rows: int, *, in_hand: int = 0, persisted: int = 0) -> None:
        """Record, in one step, ``persisted`` of ``in_hand`` in-flight messages and ``rows``."""


class QueueStrategy(Protocol):
    """Where a destination's queued batches go, and how they are delivered from there.

    The worker calls :meth:`attach` once, from its constructor; then :meth:`run` on its worker
    thread, :meth:`drain_inline` at interpreter exit when no thread could start,
    :meth:`pending` and :meth:`threads` while flushing and shutting down, :meth:`after_fork` in
    a forked child (after resetting its own state), and :meth:`close` once every thread of
    :meth:`threads` has ended. Nothing of it runs on the caller's thread except :meth:`attach`.
    """

    def attach(self, worker: Worker) -> None:
        """Serve ``worker`` from now on (one strategy serves one destination).

        Raises:
            ConfigurationError: If it already serves another destination.
        """

    def run(self) -> None:
        """The worker thread's loop: deliver until :meth:`Worker.should_stop` says so."""

    def drain_inline(self, deadline: float) -> None:
        """No thread could start (interpreter exit): deal with the queue here, by ``deadline``."""

    def pending(self) -> int:
        """Messages held beyond the worker's queue and in-flight count (e.g. in a file)."""

    def threads(self) -> Sequence[threading.Thread]:
        """Threads of the strategy's own that must end before the transport is closed."""

    def after_fork(self) -> None:
        """In a forked child: drop what belongs to the parent (threads, connections)."""

    def close(self) -> None:
        """Release what the strategy holds; the destination is shut down."""


def deliver_from_memory(worker: Worker) -> None:
    """The memory strategy's loop: wake on a full batch or each ``linger``, deliver, repeat."""
    while True:
        worker.wait_for_work(worker.linger if worker.linger > 0 else None)
        worker.deliver_queued()
        worker.notify_idle()
        if worker.should_stop():
            return


class MemoryStrategy:
    """The default strategy: batches are delivered from the in-memory queue, nothing is stored.

    A crash loses what the queue holds; :class:`~instrumentor.delivery.OutboxStrategy` keeps it
    in a file instead.
    """

    def __init__(self) -> None:
        self._worker: Worker | None = None

    def attach(self, worker: Worker) -> None:
        """Serve ``worker``; see :meth:`QueueStrategy.attach`."""
        if self._worker is not None:
            raise ConfigurationError("a queue strategy serves one destination: build one for each")
        self._worker = worker

    def run(self) -> None:
        """Deliver from the queue until shut down."""
        deliver_from_memory(self._attached())

    def drain_inline(self, deadline: float) -> None:
        """Deliver on this thread until the queue is empty or ``deadline`` (monotonic)."""
        self._attached().deliver_queued(deadline)

    def pending(self) -> int:
        """Nothing is held beyond the queue."""
        return 0

    def threads(self) -> Sequence[threading.Thread]:
        """No threads besides the worker's."""
        return ()

    def after_fork(self) -> None:
        """Nothing to drop: the worker resets the queue."""

    def close(self) -> None:
        """Nothing to release."""

    def _attached(self) -> Worker:
        if self._worker is None:
            raise RuntimeError("the strategy is not attached to a destination")
        return self._worker

    def __repr__(self) -> str:
        return "MemoryStrategy()"
