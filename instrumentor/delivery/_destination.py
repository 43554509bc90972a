"""A destination: a transport behind a bounded in-memory queue and one daemon worker thread.

The caller's side is a ``deque.append`` (and a counted drop when the queue is full): no lock,
no I/O, never a wait. The worker wakes when a batch is full or after ``linger`` seconds, turns
emissions into messages, delivers them with the retry policy, and counts what happened.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import multiprocessing.util
import os
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instrumentor._diagnostics import Incident
from instrumentor._otel import suppress_instrumentation
from instrumentor._state import report as report_incident
from instrumentor.delivery._attempt import attempt, is_too_large
from instrumentor.delivery._retry import RetryPolicy
from instrumentor.delivery._telemetry import DestinationMetrics
from instrumentor.exceptions import ConfigurationError

if TYPE_CHECKING:
    from instrumentor._emitter import Emission
    from instrumentor._messages import Message
    from instrumentor._protocols import Transport

__all__ = [
    "Destination",
    "DestinationStats",
    "FlushResult",
    "counters",
    "flush_all",
    "retire",
    "set_exit_timeout",
    "shutdown_all",
]

_log = logging.getLogger("instrumentor")
_names = itertools.count(1)
_live: weakref.WeakSet[Destination] = weakref.WeakSet()


class _Counts:
    """One destination's counters; kept after the destination is gone, so totals never shrink."""

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


_all_counts: list[_Counts] = []  # every destination's counters in this process


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
        dropped: Events (``queue_full``, ``shutdown``) or messages (``too_large``) dropped, by
            reason.
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
        #: Called with ``(kind, message, error)`` to report an incident; by default it goes to
        #: the installed configuration (counted, logged, ``on_error``) with this name as site.
        self.report: Callable[[str, str, BaseException | None], None] | None = self._report_incident
        self._closed = False
        self._transport_closed = False
        self._reset_state()
        self._metrics = DestinationMetrics(self)
        _live.add(self)

    # --- state, rebuilt in a forked child ----------------------------------------------------

    def _reset_state(self) -> None:
        self._queue: deque[Emission] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._interrupt = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False
        self._deadline: float | None = None
        self._counts = _Counts()
        _all_counts.append(self._counts)

    # --- the caller's side -------------------------------------------------------------------

    def __call__(self, sender: Any, *, emission: Emission) -> None:
        """Enqueue ``emission``; drop (and count) it when full or shut down. Never blocks."""
        queue = self._queue
        if len(queue) >= self.max_queue or self._closed:
            self._drop(emission, "shutdown" if self._closed else "queue_full")
            return
        queue.append(emission)
        if self._worker is None:
            self._start()
        if len(queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    def _report_incident(self, kind: str, message: str, error: BaseException | None) -> None:
        report_incident(Incident(kind, message, site=self.name, error=error))

    def _drop(self, item: Any, reason: str, count: int = 1) -> None:
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

    def _start(self) -> None:
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

    # --- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        with suppress_instrumentation():  # the provider calls are not application work
            self._loop()

    def _loop(self) -> None:
        try:
            self._work()
        except BaseException as exc:
            self._note_error(f"the delivery worker stopped: {type(exc).__name__}", exc)
        finally:
            with self._lock:
                if self._worker is threading.current_thread():
                    self._worker = None  # the next event starts a new worker
                self._idle.notify_all()

    def _work(self) -> None:
        """Deliver from the queue until shut down (the outbox destination overrides this)."""
        while True:
            self._wake.wait(self.linger if self.linger > 0 else None)
            self._wake.clear()
            while self._queue and not self._past_deadline():
                batch = self._next_batch()
                if batch:
                    self._deliver_batch(batch)
            with self._lock:
                self._idle.notify_all()
                if self._stopping and (not self._queue or self._past_deadline()):
                    return

    def _next_batch(self) -> list[Message]:
        """Take whole events off the queue, up to ``batch_size`` messages, counted atomically."""
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

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _deliver_batch(self, batch: Sequence[Message]) -> None:
        pending = list(batch)
        try:
            self._attempt_until_settled(pending)
        except Exception as exc:  # a bug in here or a transport: give the batch up, keep going
            self._give_up(pending, f"internal error: {type(exc).__name__}", exc)
        except BaseException as exc:  # the worker is going down: settle the batch first
            self._give_up(pending, f"interrupted: {type(exc).__name__}", exc)
            raise

    def _attempt_until_settled(self, pending: list[Message]) -> None:
        attempts = 0
        started = time.monotonic()
        while pending:
            attempts += 1
            attempt_started = time.monotonic()
            try:
                outcome = attempt(self.transport, pending)
            finally:
                self._metrics.attempt(time.monotonic() - attempt_started)
            if outcome.delivered:
                self._count_delivered(len(outcome.delivered))
            for reason, refused in outcome.refused().items():
                self._give_up(refused, reason, outcome.exception)
            pending[:] = outcome.retry
            if not pending:
                return
            self._note_error(outcome.error or "delivery failed", outcome.exception)
            delay = self.retry.delay(attempts, outcome.retry_after)
            if self.retry.gives_up(attempts, time.monotonic() - started + delay):
                self._give_up(list(pending), f"gave up after {attempts} attempts", None)
                pending.clear()
                return
            if self._deadline is not None:
                delay = min(delay, max(self._deadline - time.monotonic(), 0.0))
            with self._lock:
                self._counts.retried += len(pending)
            self._metrics.retried(len(pending))
            if self._interrupt.wait(delay) or self._past_deadline():
                return  # shutting down with time up: what is left stays pending (reported)

    def _count_delivered(self, count: int, *, in_flight: bool = True) -> None:
        with self._lock:
            self._counts.delivered += count
            if in_flight:
                self._counts.in_flight -= count
        self._metrics.delivered(count)

    def _give_up(
        self,
        messages: Sequence[Message],
        reason: str,
        exc: BaseException | None,
        *,
        in_flight: bool = True,
    ) -> None:
        if not messages:
            return
        too_large = is_too_large(reason)
        with self._lock:
            if in_flight:
                self._counts.in_flight -= len(messages)
            if too_large:
                self._counts.dropped["too_large"] += len(messages)
            else:
                self._counts.failed += len(messages)
        if too_large:
            self._metrics.dropped(len(messages), "too_large")
        else:
            self._metrics.failed(len(messages))
        if self.report is not None:
            self.report(
                "delivery_failed",
                f"destination {self.name} gave up {len(messages)} message(s): {reason}",
                exc,
            )
        if self.on_drop is not None:
            for message in messages:
                with contextlib.suppress(Exception):
                    self.on_drop(message, reason)

    def _note_error(self, text: str, exc: BaseException | None) -> None:
        self._counts.last_error = text
        if self.report is not None:
            with contextlib.suppress(Exception):
                self.report("delivery_retrying", f"destination {self.name}: {text}; retrying", exc)

    # --- flush and shutdown -------------------------------------------------------------------

    def _pending(self) -> int:
        return len(self._queue) + max(self._counts.in_flight, 0)

    def _result_since(self, delivered: int, failed: int) -> FlushResult:
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
        counts = self._counts
        before = (counts.delivered, counts.failed)
        if self._queue and self._worker is None:
            self._start()
        self._wake.set()
        with self._lock:
            while self._pending() and self._worker is not None and self._worker.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(min(remaining, 0.05))
                self._wake.set()
        return self._result_since(*before)

    def shutdown(self, timeout: float = 5.0) -> FlushResult:
        """Flush within ``timeout``, stop the worker and close the transport. Idempotent.

        Several concurrent calls share the earliest deadline. Events emitted afterwards are
        dropped (reason ``shutdown``).
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        before = (self._counts.delivered, self._counts.failed)
        self.begin_shutdown(deadline)
        self.finish_shutdown(deadline)
        return self._result_since(*before)

    def begin_shutdown(self, deadline: float) -> None:
        """Stop accepting events and tell the worker to finish by ``deadline`` (monotonic)."""
        with self._lock:
            self._closed = True
            self._stopping = True
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        self._wake.set()

    def _drain_inline(self, deadline: float) -> None:
        """Deliver on this thread until the queue is empty or ``deadline`` (no worker exists)."""
        with suppress_instrumentation():
            while self._queue and time.monotonic() < deadline:
                batch = self._next_batch()
                if batch:
                    self._deliver_batch(batch)

    def _threads(self) -> list[threading.Thread]:
        """The threads that must end before the transport is closed."""
        return [self._worker] if self._worker is not None else []

    def finish_shutdown(self, deadline: float) -> None:
        """Wait for the worker until ``deadline`` (monotonic), then close the transport."""
        if self._worker is None and self._queue and self._pid == os.getpid():
            self._drain_inline(deadline)  # events that arrived when no thread could start
        if self._pid == os.getpid():
            for thread in self._threads():
                if thread.is_alive():
                    thread.join(max(deadline - time.monotonic(), 0.0))
            if any(thread.is_alive() for thread in self._threads()):
                if self._past_deadline():
                    # Time is up: stop retrying. The worker may be inside a request; closing the
                    # transport under it could wait for that request, so the (daemon) worker is
                    # left to end with the process, and the transport with it.
                    self._interrupt.set()
                return
        with self._lock:
            if self._transport_closed:
                return
            self._transport_closed = True
        with contextlib.suppress(Exception):  # closing must not raise at exit
            self.transport.close()

    # --- introspection ------------------------------------------------------------------------

    def stats(self) -> DestinationStats:
        """A snapshot of this destination's counters."""
        with self._lock:
            counts = self._counts
            return DestinationStats(
                name=self.name,
                enqueued=counts.dequeued + len(self._queue),
                delivered=counts.delivered,
                retried=counts.retried,
                failed=counts.failed,
                dropped=dict(counts.dropped),
                queue_depth=len(self._queue),
                in_flight=max(counts.in_flight, 0),
                last_error=counts.last_error,
                persisted=counts.persisted,
                outbox_rows=max(counts.outbox_rows, 0),
            )

    def __repr__(self) -> str:
        return f"Destination({self.name!r}, {self.transport!r})"


def counters() -> dict[str, int]:
    """Delivery counters summed over every destination this process has had."""
    total: Counter[str] = Counter()
    for counts in list(_all_counts):
        total["enqueued"] += counts.dequeued
        total["delivered"] += counts.delivered
        total["retried"] += counts.retried
        total["failed"] += counts.failed
        total["in_flight"] += max(counts.in_flight, 0)
        total["persisted"] += counts.persisted
        total["outbox_rows"] += max(counts.outbox_rows, 0)
        for reason, number in counts.dropped.items():
            total[f"dropped.{reason}"] += number
    depth = sum(len(d._queue) for d in list(_live))
    total["enqueued"] += depth
    total["queue_depth"] = depth
    return {key: value for key, value in total.items() if value}


# --- process-wide: exit flush and fork ------------------------------------------------------

_exit_timeout = 2.0


def set_exit_timeout(seconds: float) -> None:
    """Seconds the flush at interpreter exit may take in total (``0`` disables it)."""
    global _exit_timeout
    _exit_timeout = float(seconds)


def _flush_at_exit() -> None:
    if _exit_timeout > 0:
        shutdown_all(_exit_timeout)


def retire(destinations: Sequence[Destination], timeout: float) -> None:
    """Shut ``destinations`` down together within ``timeout`` seconds, off the caller's thread.

    For destinations a new configuration replaced: what they still hold is delivered, then
    their transports are closed. At interpreter shutdown (no new threads) it runs inline with
    at most half a second.
    """
    if not destinations:
        return
    targets = list(destinations)

    def shutdown_together(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for destination in targets:
            destination.begin_shutdown(deadline)
        for destination in targets:
            destination.finish_shutdown(deadline)

    thread = threading.Thread(
        target=shutdown_together, args=(timeout,), name="instrumentor-retire", daemon=True
    )
    try:
        thread.start()
    except RuntimeError:  # interpreter shutdown (3.12+): no threads; a short inline flush
        shutdown_together(min(timeout, 0.5))


def shutdown_all(timeout: float) -> FlushResult:
    """Shut every destination of this process down in parallel within ``timeout`` in total.

    Includes destinations already closed whose worker is still delivering (e.g. ones a new
    configuration replaced a moment ago).
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    pid = os.getpid()
    targets = [
        d
        for d in list(_live)
        if d._pid == pid and (not d._closed or (d._worker is not None and d._worker.is_alive()))
    ]
    before = [(d._counts.delivered, d._counts.failed) for d in targets]
    for destination in targets:
        destination.begin_shutdown(deadline)
    for destination in targets:
        destination.finish_shutdown(deadline)
    result = FlushResult()
    for destination, (delivered, failed) in zip(targets, before, strict=True):
        result = result + destination._result_since(delivered, failed)
    return result


def flush_all(timeout: float) -> FlushResult:
    """Flush every open destination within ``timeout`` seconds in total."""
    deadline = time.monotonic() + max(timeout, 0.0)
    result = FlushResult()
    for destination in [d for d in list(_live) if not d._closed]:
        result = result + destination.flush(max(deadline - time.monotonic(), 0.0))
    return result


def _after_fork_in_child() -> None:
    _all_counts.clear()  # the parent's history is the parent's
    for destination in list(_live):
        destination._reset_state()  # a closed destination stays closed


def _in_multiprocessing_child(_: object) -> None:
    # multiprocessing children end with os._exit, which skips atexit: flush from its finalizers.
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=100)


class _Anchor:
    """A long-lived object for multiprocessing.util.register_after_fork (it keeps a weakref)."""


_anchor = _Anchor()
atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
multiprocessing.util.register_after_fork(_anchor, _in_multiprocessing_child)
