"""A destination: a transport behind a bounded in-memory queue and one daemon worker thread.

The caller's side is a ``deque.append`` (and a counted drop when the queue is full): no lock,
no I/O, never a wait. The worker wakes when a batch is full or after ``linger`` seconds, turns
emissions into messages, delivers them with the retry policy, and counts what happened.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instrumentor.delivery.retry import RetryPolicy
from instrumentor.delivery.telemetry import DestinationMetrics
from instrumentor.exceptions import (
    ConfigurationError,
    PartialDeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

if TYPE_CHECKING:
    from instrumentor.emitter import Emission
    from instrumentor.messages import Message
    from instrumentor.transports.base import Transport

__all__ = ["Destination", "DestinationStats", "FlushResult"]

_log = logging.getLogger("instrumentor")
_names = itertools.count(1)
_live: weakref.WeakSet[Destination] = weakref.WeakSet()


@dataclass(frozen=True)
class FlushResult:
    """What a :meth:`Destination.flush` or ``shutdown`` achieved before returning.

    Attributes:
        delivered: Messages delivered while it waited.
        failed: Messages given up while it waited.
        pending: Events (emissions) and messages still queued or being retried when it returned.
    """

    delivered: int = 0
    failed: int = 0
    pending: int = 0

    def __add__(self, other: FlushResult) -> FlushResult:
        return FlushResult(
            self.delivered + other.delivered,
            self.failed + other.failed,
            self.pending + other.pending,
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


class Destination:
    """Queue, batch and deliver emissions to ``transport`` without ever blocking the caller.

    Args:
        transport: Where batches go (e.g. :class:`~instrumentor.transports.AccoilTransport`).
        name: A name for stats, logs and the worker thread; by default the transport's class.
        max_queue: Events the queue holds; beyond it new events are dropped and counted.
        batch_size: Messages per delivery at most.
        linger: Seconds the worker waits for a batch to fill before sending what it has.
        retry: The :class:`RetryPolicy` for failed batches.
        on_drop: Called with ``(emission or message, reason)`` for each drop; must be quick.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        name: str | None = None,
        max_queue: int = 100_000,
        batch_size: int = 100,
        linger: float = 0.2,
        retry: RetryPolicy | None = None,
        on_drop: Callable[[Any, str], None] | None = None,
    ) -> None:
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
        #: Called with an Incident-like (kind, message) report; set by configuration.
        self.report: Callable[[str, str, BaseException | None], None] | None = None
        self._reset()
        self._metrics = DestinationMetrics(self)
        _live.add(self)

    # --- state, also rebuilt in a forked child -----------------------------------------------

    def _reset(self) -> None:
        self._queue: deque[Emission] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._interrupt = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False
        self._stopping = False
        self._deadline: float | None = None
        self._in_flight = 0
        self._dequeued = 0
        self._delivered = 0
        self._retried = 0
        self._failed = 0
        self._dropped: Counter[str] = Counter()
        self._last_error: str | None = None

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

    def _drop(self, item: Any, reason: str) -> None:
        with self._lock:
            self._dropped[reason] += 1
            first = self._dropped[reason] == 1
        self._metrics.dropped(1, reason)
        if self.report is not None and (first or reason != "queue_full"):
            self.report(
                "delivery_dropped",
                f"destination {self.name} dropped an event ({reason}); "
                f"{self._dropped[reason]} dropped for this reason so far",
                None,
            )
        if self.on_drop is not None:
            with contextlib.suppress(Exception):  # a hook must not break the caller
                self.on_drop(item, reason)

    def _start(self) -> None:
        with self._lock:
            if self._worker is not None or self._closed:
                return
            self._worker = threading.Thread(
                target=self._run, name=f"instrumentor-{self.name}", daemon=True
            )
            self._worker.start()
        _ensure_exit_hook()

    def _reset_in_child(self) -> None:
        pending = self._queue
        self._reset()
        pending.clear()

    # --- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.linger if self.linger > 0 else None)
            self._wake.clear()
            while self._queue:
                if self._past_deadline():
                    break
                self._deliver_batch(self._next_batch())
            with self._lock:
                self._idle.notify_all()
                if self._stopping and (not self._queue or self._past_deadline()):
                    return

    def _next_batch(self) -> list[Message]:
        messages: list[Message] = []
        queue = self._queue
        taken = 0
        while queue and len(messages) < self.batch_size:
            emission = queue.popleft()
            taken += 1
            try:
                messages.extend(emission.messages)
            except Exception as exc:  # an emission that cannot become messages: counted, skipped
                self._note_error(f"could not build messages: {type(exc).__name__}: {exc}", exc)
                with self._lock:
                    self._dropped["invalid"] += 1
        with self._lock:
            self._dequeued += taken
            self._in_flight += len(messages)
        self._metrics.enqueued(taken)
        return messages

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _deliver_batch(self, batch: Sequence[Message]) -> None:
        pending = list(batch)
        attempts = 0
        started = time.monotonic()
        while pending:
            retry_after: float | None = None
            attempts += 1
            attempt_started = time.monotonic()
            try:
                try:
                    self.transport.deliver(pending)
                finally:
                    self._metrics.attempt(time.monotonic() - attempt_started)
            except PayloadTooLargeError as exc:
                if len(pending) == 1:
                    self._give_up(pending, "too_large", exc)
                else:  # split: each half settles its own share of the in-flight count
                    middle = len(pending) // 2
                    self._deliver_batch(pending[:middle])
                    self._deliver_batch(pending[middle:])
                return
            except PartialDeliveryError as exc:
                self._count_delivered(len(pending) - len(exc.retry) - len(exc.failed))
                for message, reason in exc.failed:
                    self._give_up([message], reason, exc)
                pending = list(exc.retry)
                retry_after = exc.retry_after
                if pending:
                    self._note_error(str(exc), exc)
            except RetryableDeliveryError as exc:
                retry_after = exc.retry_after
                self._note_error(str(exc), exc)
            except PermanentDeliveryError as exc:
                self._give_up(pending, str(exc), exc)
                return
            except Exception as exc:  # a transport bug: retried like an outage, then given up
                self._note_error(f"transport raised {type(exc).__name__}: {exc}", exc)
            else:
                self._count_delivered(len(pending))
                return
            if not pending:
                return
            if self.retry.gives_up(attempts, time.monotonic() - started):
                self._give_up(pending, f"gave up after {attempts} attempts", None)
                return
            delay = self.retry.delay(attempts, retry_after)
            if self._deadline is not None:
                delay = min(delay, max(self._deadline - time.monotonic(), 0.0))
            with self._lock:
                self._retried += len(pending)
            self._metrics.retried(len(pending))
            if self._interrupt.wait(delay) or self._past_deadline():
                # Shutting down with time up: what is left stays pending (reported).
                return

    def _count_delivered(self, count: int) -> None:
        with self._lock:
            self._delivered += count
            self._in_flight -= count
        self._metrics.delivered(count)

    def _give_up(self, messages: Sequence[Message], reason: str, exc: BaseException | None) -> None:
        too_large = reason == "too_large" or "(too large)" in reason
        with self._lock:
            self._in_flight -= len(messages)
            if too_large:
                self._dropped["too_large"] += len(messages)
            else:
                self._failed += len(messages)
        if too_large:
            self._metrics.dropped(len(messages), reason)
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
        self._last_error = text
        if self.report is not None:
            self.report("delivery_retrying", f"destination {self.name}: {text}; retrying", exc)

    # --- flush and shutdown -------------------------------------------------------------------

    def _pending(self) -> int:
        return len(self._queue) + max(self._in_flight, 0)

    def flush(self, timeout: float = 5.0) -> FlushResult:
        """Deliver what is queued now, waiting at most ``timeout`` seconds. Never raises.

        Returns:
            What was delivered and failed meanwhile, and what is still pending.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        before = (self._delivered, self._failed)
        self._wake.set()
        with self._lock:
            while self._pending() and self._worker is not None and self._worker.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(min(remaining, 0.05))
                self._wake.set()
        return FlushResult(self._delivered - before[0], self._failed - before[1], self._pending())

    def shutdown(self, timeout: float = 5.0) -> FlushResult:
        """Flush within ``timeout``, stop the worker and close the transport. Idempotent.

        Events emitted afterwards are dropped (reason ``shutdown``).
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        self._begin_shutdown(deadline)
        return self._finish_shutdown(deadline)

    def _begin_shutdown(self, deadline: float) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._deadline = deadline
        self._wake.set()

    def _finish_shutdown(self, deadline: float) -> FlushResult:
        before = (self._delivered, self._failed)
        worker = self._worker
        if worker is not None and worker.is_alive() and self._pid == os.getpid():
            worker.join(max(deadline - time.monotonic(), 0.0))
            if worker.is_alive():
                # Time is up: stop retrying. The worker may be inside a request; closing the
                # transport under it could wait for that request, so the (daemon) worker is
                # left to end with the process, and the transport with it.
                self._interrupt.set()
                return FlushResult(
                    self._delivered - before[0], self._failed - before[1], self._pending()
                )
        with contextlib.suppress(Exception):  # closing must not raise at exit
            self.transport.close()
        return FlushResult(self._delivered - before[0], self._failed - before[1], self._pending())

    # --- introspection ------------------------------------------------------------------------

    def stats(self) -> DestinationStats:
        """A snapshot of this destination's counters."""
        with self._lock:
            return DestinationStats(
                name=self.name,
                enqueued=self._dequeued + len(self._queue),
                delivered=self._delivered,
                retried=self._retried,
                failed=self._failed,
                dropped=dict(self._dropped),
                queue_depth=len(self._queue),
                in_flight=max(self._in_flight, 0),
                last_error=self._last_error,
            )

    def __repr__(self) -> str:
        return f"Destination({self.name!r}, {self.transport!r})"


# --- process-wide: exit flush and fork ------------------------------------------------------

_exit_hook_lock = threading.Lock()
_exit_hook_installed = False
#: Seconds the exit flush may take in total; set from configuration (0 disables it).
exit_timeout = 2.0


def _ensure_exit_hook() -> None:
    global _exit_hook_installed
    with _exit_hook_lock:
        if not _exit_hook_installed:
            import atexit

            atexit.register(_flush_at_exit)
            _exit_hook_installed = True


def _flush_at_exit() -> None:
    if exit_timeout <= 0:
        return
    shutdown_all(exit_timeout)


def shutdown_all(timeout: float) -> FlushResult:
    """Shut every live destination down in parallel within ``timeout`` seconds in total."""
    deadline = time.monotonic() + max(timeout, 0.0)
    destinations = [d for d in list(_live) if d._pid == os.getpid() and not d._closed]
    for destination in destinations:
        destination._begin_shutdown(deadline)
    result = FlushResult()
    for destination in destinations:
        result = result + destination._finish_shutdown(deadline)
    return result


def flush_all(timeout: float) -> FlushResult:
    """Flush every live destination within ``timeout`` seconds in total."""
    deadline = time.monotonic() + max(timeout, 0.0)
    result = FlushResult()
    for destination in [d for d in list(_live) if d._worker is not None and not d._closed]:
        result = result + destination.flush(max(deadline - time.monotonic(), 0.0))
    return result


def _after_fork_in_child() -> None:
    for destination in list(_live):
        destination._reset_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
