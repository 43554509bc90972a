"""A destination: a transport behind a bounded queue, one worker thread and a queue strategy.

The caller's side is a ``deque.append`` (and a counted drop when the queue is full): no lock,
no I/O, never a wait. The worker thread runs the queue strategy
(:mod:`instrumentor.delivery._strategy`), which uses the public methods marked "for
strategies" (the :class:`~instrumentor.delivery._strategy.Worker` interface).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from instrumentor._emitter import forget_undelivered
from instrumentor._otel import suppress_instrumentation
from instrumentor._state import reporter
from instrumentor.delivery._attempt import drop_reason
from instrumentor.delivery._retry import RetryPolicy
from instrumentor.delivery._retrying import attempt_until_settled
from instrumentor.delivery._stats import DestinationStats, FlushResult, new_counts, snapshot
from instrumentor.delivery._strategy import MemoryStrategy, QueueStrategy
from instrumentor.delivery._telemetry import DestinationMetrics
from instrumentor.exceptions import ConfigurationError

if TYPE_CHECKING:
    from instrumentor._emission import Emission
    from instrumentor._messages import Message
    from instrumentor._protocols import Transport

__all__ = ["Destination", "live_destinations"]

_names = itertools.count(1)
_live: weakref.WeakSet[Destination] = weakref.WeakSet()

#: ``(delivered, failed)`` of a destination at some moment (see :meth:`Destination.settled`).
Mark = tuple[int, int]


def live_destinations() -> list[Destination]:
    """Every destination of this process that has not been collected."""
    return list(_live)


class Destination:
    """Queue, batch and deliver emissions to ``transport`` without ever blocking the caller.

    Args:
        transport: Where batches go (e.g. :class:`~instrumentor.transports.AccoilTransport`).
        name: A name for stats, logs and the worker thread; by default the transport's class.
        max_queue: Events the queue holds; beyond it new events are dropped and counted.
        batch_size: Messages per delivery at most; by default the transport's
            ``preferred_batch_size`` if it has one (Segment: 500), else 100.
        linger: Seconds the worker waits for a batch to fill before sending what it has (``0``:
            each event wakes it).
        retry: The :class:`RetryPolicy` for failed batches.
        on_drop: Called with ``(emission or message, reason)`` for each drop; must be quick.
        strategy: Where queued batches go and how they are delivered from there: a
            :class:`~instrumentor.delivery.MemoryStrategy` (the default) or an
            :class:`~instrumentor.delivery.OutboxStrategy`. One strategy serves one destination.

    Attributes:
        strategy: The queue strategy.
        report: Called with ``(kind, message, error)`` to report an incident; by default it
            goes to the installed configuration (counted, logged, ``on_error``) with this
            destination's name as site. ``None`` reports nothing.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        name: str | None = None,
        max_queue: int = 100_000,
        batch_size: int | None = None,
        linger: float = 0.2,
        retry: RetryPolicy | None = None,
        on_drop: Callable[[Any, str], None] | None = None,
        strategy: QueueStrategy | None = None,
    ) -> None:
        if batch_size is None:
            batch_size = int(getattr(transport, "preferred_batch_size", 100))
        if max_queue < 1 or batch_size < 1 or linger < 0:
            raise ConfigurationError("max_queue and batch_size must be >= 1, linger >= 0")
        self.transport = transport
        self.name = name or f"{type(transport).__name__}-{next(_names)}"
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.linger = linger
        # With no linger every event wakes the worker; otherwise a full batch does (or time).
        self._wake_at = 1 if linger == 0 else batch_size
        self.retry = retry or RetryPolicy()
        self.on_drop = on_drop
        # Not a bound method (a reference to itself): a dropped destination is freed at once.
        self.report: Callable[[str, str, BaseException | None], None] | None = reporter(self.name)
        self.strategy: QueueStrategy = strategy if strategy is not None else MemoryStrategy()
        self._closed = False
        self._transport_closed = False
        self._reset_state()
        self._metrics = DestinationMetrics(self)
        self.strategy.attach(self)  # raises for a strategy already serving another destination
        _live.add(self)  # only a destination that was built is flushed, shut down and forked

    def _reset_state(self) -> None:
        """The state a forked child rebuilds (a closed destination stays closed)."""
        self._queue: deque[Emission] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._interrupt = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False
        self._deadline: float | None = None
        self._counts = new_counts()

    def after_fork(self) -> None:
        """In a forked child: a new queue, locks, counters, no thread; then the strategy's."""
        self._reset_state()
        self.strategy.after_fork()

    # --- the caller's side -------------------------------------------------------------------

    def __call__(self, sender: Any, *, emission: Emission) -> None:
        """Enqueue ``emission``; drop (and count) it when full or shut down. Never blocks."""
        queue = self._queue
        if len(queue) >= self.max_queue or self._closed:
            self.drop(emission, "shutdown" if self._closed else "queue_full")
            return
        queue.append(emission)
        if self._worker is None:
            self.start()
        if len(queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    def drop(self, item: Any, reason: str, count: int = 1) -> None:
        """Count ``count`` events or messages dropped for ``reason``; for strategies too.

        The first drop of each reason is reported (``delivery_dropped``); each is handed to
        ``on_drop``.
        """
        forget_undelivered((item,))  # its identify and group calls are due again
        with self._lock:
            self._counts.dropped[reason] += count
            first = self._counts.dropped[reason] == count
        self._metrics.dropped(count, reason)
        if first and self.report is not None:  # the first of each reason; all are counted
            self.report(
                "delivery_dropped",
                f"destination {self.name} dropped an event ({reason}); further drops for this "
                "reason are only counted (stats())",
                None,
            )
        if self.on_drop is not None:
            with contextlib.suppress(Exception):  # a hook must not break the caller
                self.on_drop(item, reason)

    def start(self) -> None:
        """Start the worker thread if it is not running; for strategies (events start it too)."""
        with self._lock:
            if self._worker is not None or self._closed:
                return
            thread = threading.Thread(
                target=self._run, name=f"instrumentor-{self.name}", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # interpreter shutdown (3.12+): the exit flush drains inline
                return
            self._worker = thread

    def _run(self) -> None:
        with suppress_instrumentation():  # the provider calls are not application work
            try:
                self.strategy.run()
            except BaseException as exc:
                self.note_error(f"the delivery worker stopped: {type(exc).__name__}", exc)
            finally:
                with self._lock:
                    if self._worker is threading.current_thread():
                        self._worker = None  # the next event starts a new worker
                    self._idle.notify_all()

    # --- for strategies: the queue and the worker's rhythm -----------------------------------

    @property
    def queue_depth(self) -> int:
        """Events waiting in the queue now."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Messages taken off the queue and not settled (nor persisted) yet."""
        return max(self._counts.in_flight, 0)

    @property
    def outbox_rows(self) -> int:
        """Messages the strategy last counted in its outbox for this destination's channel."""
        return max(self._counts.outbox_rows, 0)

    @property
    def closed(self) -> bool:
        """Whether shutdown has begun: new events are dropped (reason ``shutdown``)."""
        return self._closed

    @property
    def stopping(self) -> bool:
        """Whether shutdown has begun; the worker finishes by :attr:`deadline`."""
        return self._stopping

    @property
    def deadline(self) -> float | None:
        """The shutdown deadline (monotonic), once shutdown has begun."""
        return self._deadline

    @property
    def active(self) -> bool:
        """Whether this process has anything to shut down here: open, or its worker busy."""
        if self._pid != os.getpid():
            return False
        worker = self._worker
        return not self._closed or (worker is not None and worker.is_alive())

    def past_deadline(self) -> bool:
        """Whether shutdown has begun and its deadline has passed."""
        return self._deadline is not None and time.monotonic() >= self._deadline

    def wait_for_work(self, timeout: float | None) -> bool:
        """Sleep until a batch fills, a flush or shutdown asks, or ``timeout``; whether woken."""
        woken = self._wake.wait(timeout)
        if woken:
            self._wake.clear()
        return woken

    def notify_idle(self) -> None:
        """Tell those waiting in :meth:`flush` to look at what is pending again."""
        with self._lock:
            self._idle.notify_all()

    def should_stop(self) -> bool:
        """Whether the worker's loop should end: shutting down, and the queue empty or time up."""
        with self._lock:
            return self._stopping and (not self._queue or self.past_deadline())

    def next_batch(self) -> list[Message]:
        """Take whole events off the queue, up to ``batch_size`` messages, counted atomically.

        The messages are in flight from now on, until delivered, given up or persisted.
        """
        messages: list[Message] = []
        invalid = 0
        queue = self._queue
        with self._lock:  # callers never take this lock: they are not held up
            taken = 0
            while queue and len(messages) < self.batch_size:
                emission = queue.popleft()
                taken += 1
                try:
                    messages.extend(emission.messages)
                except Exception:  # an emission that cannot become messages
                    invalid += 1
            self._counts.dequeued += taken
            self._counts.in_flight += len(messages)
            self._counts.dropped["invalid"] += invalid
            if not self._counts.dropped["invalid"]:
                del self._counts.dropped["invalid"]
        self._metrics.enqueued(taken)
        return messages

    def deliver_queued(self, deadline: float | None = None) -> None:
        """Deliver from the queue on the calling thread, batch by batch, until it is empty.

        Args:
            deadline: Stop once this monotonic time has passed; by default the shutdown
                deadline, if shutdown has begun.
        """
        with suppress_instrumentation():
            while self._queue and not self._time_up(deadline):
                batch = self.next_batch()
                if batch:
                    self.deliver(batch)

    def _time_up(self, deadline: float | None) -> bool:
        if deadline is None:
            return self.past_deadline()
        return time.monotonic() >= deadline

    # --- for strategies: delivery and counting -------------------------------------------------

    def deliver(self, batch: Sequence[Message]) -> None:
        """Deliver in-flight messages with the retry policy, counting every outcome.

        Returns once every message is delivered or given up, or once shutdown's time is up
        (what is left then stays pending). Never raises, except a ``BaseException`` that ends
        the worker, after settling the batch.
        """
        pending = list(batch)
        try:
            attempt_until_settled(self, pending, self._interrupt)
        except Exception as exc:  # a bug in here or a transport: give the batch up, keep going
            self.give_up(pending, f"internal error: {type(exc).__name__}", exc)
        except BaseException as exc:  # the worker is going down: settle the batch first
            self.give_up(pending, f"interrupted: {type(exc).__name__}", exc)
            raise

    def count_delivered(self, count: int, *, in_flight: bool = True) -> None:
        """Count ``count`` messages the provider accepted (``in_flight``: taken off the queue)."""
        with self._lock:
            self._counts.delivered += count
            if in_flight:
                self._counts.in_flight -= count
        self._metrics.delivered(count)

    def count_retried(self, count: int) -> None:
        """Count ``count`` messages about to be attempted again."""
        with self._lock:
            self._counts.retried += count
        self._metrics.retried(count)

    def give_up(
        self,
        messages: Sequence[Message],
        reason: str,
        error: BaseException | None,
        *,
        in_flight: bool = True,
    ) -> None:
        """Give ``messages`` up for ``reason``: counted, reported, handed to ``on_drop``.

        Counted in ``dropped.too_large`` or ``dropped.invalid_message`` (an ``invalid_message``
        incident) if the reason says so (:func:`drop_reason`), else ``failed``.
        """
        if not messages:
            return
        dropped = drop_reason(reason)  # too large or invalid: it would be refused again
        if not dropped:
            forget_undelivered(messages)  # identify and group calls given up are due again
        with self._lock:
            if in_flight:
                self._counts.in_flight -= len(messages)
            if dropped:
                self._counts.dropped[dropped] += len(messages)
            else:
                self._counts.failed += len(messages)
        if dropped:
            self._metrics.dropped(len(messages), dropped)
        else:
            self._metrics.failed(len(messages))
        if self.report is not None:
            self.report(
                "invalid_message" if dropped == "invalid_message" else "delivery_failed",
                f"destination {self.name} gave up {len(messages)} message(s): {reason}",
                error,
            )
        if self.on_drop is not None:
            for message in messages:
                with contextlib.suppress(Exception):
                    self.on_drop(message, reason)

    def note_error(self, text: str, error: BaseException | None) -> None:
        """Record ``text`` as the last error and report a ``delivery_retrying`` incident."""
        self._counts.last_error = text
        if self.report is not None:
            with contextlib.suppress(Exception):
                self.report(
                    "delivery_retrying", f"destination {self.name}: {text}; retrying", error
                )

    def incident(
        self, kind: str, text: str, error: BaseException | None = None, *, record: bool = False
    ) -> None:
        """Report a ``kind`` incident about this destination; ``record``: also the last error."""
        if record:
            self._counts.last_error = text
        if self.report is not None:
            self.report(kind, f"destination {self.name}: {text}", error)

    def record_attempt(self, seconds: float) -> None:
        """Record the duration of one delivery attempt (the ``delivery.duration`` metric)."""
        self._metrics.attempt(seconds)

    def record_outbox(self, rows: int, *, in_hand: int = 0, persisted: int = 0) -> None:
        """Record ``persisted`` of ``in_hand`` in-flight messages and the ``rows`` now stored.

        One step, so that :meth:`flush` never sees a batch in neither place.
        """
        with self._lock:
            self._counts.in_flight -= in_hand
            self._counts.persisted += persisted
            self._counts.outbox_rows = rows

    # --- flush and shutdown -------------------------------------------------------------------

    def _pending(self) -> int:
        return len(self._queue) + max(self._counts.in_flight, 0) + self.strategy.pending()

    def settled(self) -> Mark:
        """Messages delivered and failed so far: a mark for :meth:`result_since`."""
        return self._counts.delivered, self._counts.failed

    def result_since(self, mark: Mark) -> FlushResult:
        """What was delivered and failed since ``mark`` (from :meth:`settled`), what is pending."""
        delivered, failed = mark
        counts = self._counts
        return FlushResult(
            counts.delivered - delivered,
            counts.failed - failed,
            self._pending(),
            max(counts.outbox_rows, 0),
        )

    def flush(self, timeout: float = 5.0) -> FlushResult:
        """Deliver what is queued now, waiting at most ``timeout`` seconds. Never raises.

        Returns:
            What was delivered and failed meanwhile, and what is still pending.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        before = self.settled()
        if self._queue and self._worker is None:
            self.start()
        self._wake.set()
        with self._lock:
            while self._pending() and self._worker is not None and self._worker.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(min(remaining, 0.05))
                self._wake.set()
        return self.result_since(before)

    def shutdown(self, timeout: float = 5.0) -> FlushResult:
        """Flush within ``timeout``, stop the worker and close the transport. Idempotent.

        Several concurrent calls share the earliest deadline. Events emitted afterwards are
        dropped (reason ``shutdown``).
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        before = self.settled()
        self.begin_shutdown(deadline)
        self.finish_shutdown(deadline)
        return self.result_since(before)

    def begin_shutdown(self, deadline: float) -> None:
        """Stop accepting events and tell the worker to finish by ``deadline`` (monotonic)."""
        with self._lock:
            self._closed = True
            self._stopping = True
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        self._wake.set()

    def _threads(self) -> list[threading.Thread]:
        """The threads that must end before the transport is closed."""
        worker = [self._worker] if self._worker is not None else []
        return [*worker, *self.strategy.threads()]

    def finish_shutdown(self, deadline: float) -> None:
        """Wait for the threads until ``deadline`` (monotonic), then close the transport.

        Events that arrived when no thread could start are dealt with here first
        (:meth:`QueueStrategy.drain_inline`); the strategy is closed once its threads ended.
        """
        here = self._pid == os.getpid()
        if here:
            if self._worker is None and self._queue:
                self.strategy.drain_inline(deadline)
            for thread in self._threads():
                if thread.is_alive():
                    thread.join(max(deadline - time.monotonic(), 0.0))
            # Asked again: a strategy may have started a thread meanwhile (the outbox's
            # deliverer starts once the committer opened the file).
            if any(thread.is_alive() for thread in self._threads()):
                if self.past_deadline():
                    # Time is up: stop retrying. The worker may be inside a request; closing the
                    # transport under it could wait for that request, so the (daemon) worker is
                    # left to end with the process, and the transport with it.
                    self._interrupt.set()
                return
        with self._lock:
            closing = not self._transport_closed
            self._transport_closed = True
        if closing:
            with contextlib.suppress(Exception):  # closing must not raise at exit
                self.transport.close()
        if here:
            self.strategy.close()

    def stats(self) -> DestinationStats:
        """A snapshot of this destination's counters."""
        with self._lock:
            return snapshot(self.name, self._counts, len(self._queue))

    def __repr__(self) -> str:
        return f"Destination({self.name!r}, {self.transport!r})"
