"""The outbox strategy's deliverer: a thread of its own that delivers what the file holds.

First the batches the committer just stored already leased to this process (handed over in
memory: no claim, no decoding), alternating with rows claimed from the file (retries, other
processes' leftovers); then batches the file refused (delivered from memory). Each outcome is
recorded in the file (:mod:`~instrumentor.delivery._outbox_attempt`) and counted by the
worker. A provider that failed a whole batch pauses the channel with the retry policy's
backoff; a failed write of an outcome is tried again before the next batch (the rows stay
leased meanwhile).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from instrumentor._messages import Message
from instrumentor._otel import suppress_instrumentation
from instrumentor.delivery._outbox import OutboxError, OutboxRow, OutboxStore
from instrumentor.delivery._outbox_attempt import RowsOutcome, attempt_rows
from instrumentor.delivery._strategy import Worker

__all__ = ["Deliverer", "StoredBatch", "record_rows"]

_IDLE_POLL = 0.5  # seconds between looks at the file for rows of other processes and retries
_STORE_RETRY = 1.0  # seconds before claiming again after the outbox could not be read
_HANDOFF = 2  # batches stored leased to this process that may wait for its deliverer


@dataclass
class StoredBatch:
    """Rows just stored (or claimed), and the identity of the file they are in."""

    rows: list[OutboxRow]
    identity: tuple[int, int] | None


def record_rows(
    worker: Worker, store: OutboxStore, *, in_hand: int = 0, persisted: int = 0
) -> None:
    """Tell ``worker`` what ``store``'s channel holds now (and what was just persisted)."""
    try:
        rows = store.pending()
    except OutboxError:
        rows = worker.outbox_rows + persisted
    worker.record_outbox(rows, in_hand=in_hand, persisted=persisted)


class Deliverer:
    """The thread that delivers one destination's outbox rows.

    Args:
        worker: The destination.
        reader: The store it claims and settles with (its own connection).
        dead_after: Failures blamed on a message after which its row is set aside as dead.
    """

    def __init__(self, worker: Worker, reader: OutboxStore, dead_after: int) -> None:
        self._worker = worker
        self._reader = reader
        self._dead_after = dead_after
        self._handoff: deque[StoredBatch] = deque()
        self._fallback: deque[list[Message]] = deque()  # batches the file refused
        self._unsettled: list[tuple[RowsOutcome, tuple[int, int] | None]] = []
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = True
        self._resume_at = 0.0  # Unix time: the channel pauses after the provider failed
        self._failures = 0  # attempts in a row that failed as a whole
        self._provider_up = True
        self._claim_after = 0.0  # Unix time before which an empty claim is not repeated
        self._next_due = 0.0  # Unix time: the first row this process handed back is due again
        self._from_file = False  # alternate: a handed-off batch, then a claimed one

    # --- what the committer hands over -----------------------------------------------------------

    def accepts_handoff(self) -> bool:
        """Whether the next stored batch should be stored leased and handed over in memory."""
        return len(self._handoff) < _HANDOFF and time.time() >= self._resume_at

    def hand_off(self, batch: StoredBatch) -> None:
        """Take ``batch``, stored leased to this process, to deliver from memory."""
        self._handoff.append(batch)

    def stored_unleased(self) -> None:
        """Rows were stored for claiming: claim without waiting for the idle poll."""
        self._claim_after = 0.0

    def fall_back(self, batch: list[Message]) -> None:
        """Deliver ``batch`` from memory: the file refused it."""
        self._fallback.append(batch)
        self._ready.set()

    def wake(self) -> None:
        """Look for work now."""
        self._ready.set()

    # --- the thread -------------------------------------------------------------------------------

    @property
    def thread(self) -> threading.Thread | None:
        """The deliverer's thread, once started."""
        return self._thread

    def start(self) -> None:
        """Start the thread if it is not running (at interpreter exit the rows wait instead)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            thread = threading.Thread(
                target=self._loop, name=f"instrumentor-{self._worker.name}-deliver", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # interpreter shutdown: the rows wait in the file
                return
            self._thread = thread

    def stop(self) -> None:
        """End the thread after its current batch (the outbox cannot be used any more)."""
        self._running = False
        self._ready.set()

    def join(self, deadline: float | None) -> None:
        """Wait for the thread until ``deadline`` (monotonic); not at all without one."""
        thread = self._thread
        if thread is not None and deadline is not None:
            thread.join(max(deadline - time.monotonic(), 0.0))

    def deliver_fallback(self, deadline: float) -> None:
        """Deliver the batches the file refused, on this thread, until ``deadline``."""
        while self._fallback and time.monotonic() < deadline:
            self._worker.deliver(self._fallback.popleft())

    @property
    def has_fallback(self) -> bool:
        """Whether batches the file refused wait to be delivered from memory."""
        return bool(self._fallback)

    def _loop(self) -> None:
        with suppress_instrumentation():
            try:
                while self._running:
                    worked = self._step()
                    if self._done():
                        return
                    if not worked:
                        self._ready.wait(self._wait())
                        self._ready.clear()
            except BaseException as exc:
                self._worker.note_error(f"the outbox deliverer stopped: {type(exc).__name__}", exc)
            finally:
                self._worker.notify_idle()

    def _step(self) -> bool:
        """Deliver one batch if one is ready; whether it did."""
        if self._fallback:
            self._worker.deliver(self._fallback.popleft())
            return True
        if self._unsettled:
            self._settle_again()
        if self._worker.past_deadline() or time.time() < self._resume_at:
            return False
        batch = self._next_batch()
        if batch is None:
            return False
        self._from_file = not self._from_file
        self._deliver_rows(batch)
        return True

    def _next_batch(self) -> StoredBatch | None:
        """A handed-off batch or rows claimed from the file, alternately; ``None`` if neither."""
        if self._handoff and not (self._from_file and self._file_has_more()):
            return self._handoff.popleft()
        if not (self._file_has_more() and time.time() >= self._claim_after):
            return None
        try:
            rows = self._reader.claim(self._worker.batch_size)
        except OutboxError as exc:
            self._outbox_error("could not read the outbox", exc)
            self._claim_after = time.time() + _STORE_RETRY
            return None
        if rows:
            return StoredBatch(rows, self._reader.identity)
        now = time.time()
        due = self._next_due if self._next_due > now else now + _IDLE_POLL
        self._claim_after = min(now + _IDLE_POLL, due)
        record_rows(self._worker, self._reader)  # other processes may have delivered them
        return self._handoff.popleft() if self._handoff else None

    def _file_has_more(self) -> bool:
        """Whether the file may hold rows of this channel besides the handed-off ones."""
        handed = sum(len(batch.rows) for batch in self._handoff)
        return self._worker.outbox_rows > handed

    def _wait(self) -> float:
        now = time.time()
        wait = min(_IDLE_POLL, max(self._resume_at, self._claim_after) - now)
        deadline = self._worker.deadline
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        return max(wait, 0.001)

    def _done(self) -> bool:
        """At shutdown: whether nothing is left that can be delivered before the deadline."""
        worker = self._worker
        deadline = worker.deadline
        if not worker.stopping:
            return False
        if worker.past_deadline() or deadline is None:
            return True
        if worker.queue_depth or worker.in_flight > 0 or self._fallback or self._handoff:
            return False
        if worker.outbox_rows <= 0:
            return True
        wall_deadline = time.time() + (deadline - time.monotonic())
        if self._resume_at >= wall_deadline:
            return True  # paused (a retry is due) beyond the deadline: the rows wait in the file
        try:
            return not self._reader.due_before(wall_deadline)
        except OutboxError:
            return True

    # --- one batch ----------------------------------------------------------------------------

    def _deliver_rows(self, batch: StoredBatch) -> None:
        worker = self._worker
        started = time.monotonic()
        result = attempt_rows(
            worker.transport,
            batch.rows,
            policy=worker.retry,
            dead_after=self._dead_after,
            provider_up=self._provider_up,
        )
        worker.record_attempt(time.monotonic() - started)
        try:
            result.settle(self._reader, batch.identity)
        except OutboxError as exc:  # the rows stay leased (renewed): recorded when it works
            self._outbox_error("could not record a delivery in the outbox; trying again", exc)
            self._unsettled.append((result, batch.identity))
        self._account(result)
        record_rows(worker, self._reader)

    def _settle_again(self) -> None:
        while self._unsettled:
            result, identity = self._unsettled[0]
            try:
                result.settle(self._reader, identity)
            except OutboxError:
                return
            self._unsettled.pop(0)

    def _account(self, result: RowsOutcome) -> None:
        worker = self._worker
        outcome = result.outcome
        worker.count_delivered(len(outcome.delivered), in_flight=False)
        for reason, messages in outcome.refused().items():
            worker.give_up(messages, reason, outcome.exception, in_flight=False)
        if result.dead:
            worker.give_up(
                result.dead_messages, result.dead[0][1], outcome.exception, in_flight=False
            )
        if result.invalid:
            worker.drop(None, "invalid", result.invalid)
        if result.retry:
            worker.count_retried(len(result.retry))
            worker.note_error(outcome.error or "delivery failed", outcome.exception)
            self._schedule(result.next_due())
        if outcome.delivered or outcome.failed or outcome.too_large:
            self._failures, self._provider_up = 0, True
        elif result.provider_down:
            self._failures += 1
            self._provider_up = False
            self._resume_at = time.time() + worker.retry.delay(self._failures, outcome.retry_after)

    def _schedule(self, due: float | None) -> None:
        """Claim again no later than ``due``, when the first handed-back row is due."""
        if due is None:
            return
        now = time.time()
        self._next_due = min(self._next_due, due) if self._next_due > now else due
        if self._claim_after > now:
            self._claim_after = min(self._claim_after, due)

    def _outbox_error(self, what: str, exc: OutboxError) -> None:
        self._worker.incident("outbox_error", f"{what}: {exc}", exc, record=True)
