"""A destination whose worker persists every batch to the SQLite outbox before delivering it.

The caller's side is unchanged (a ``deque.append``). The worker takes what is queued, commits it
to the outbox in one transaction per batch (counted in ``persisted``), then claims due rows,
delivers them and deletes them only once the provider accepted (or refused) them. If the outbox
cannot be opened the destination delivers from memory like a plain :class:`Destination`; if a
write fails later (a full disk), that batch is delivered from memory and the next one tries the
outbox again. Every such problem is an ``outbox_unavailable`` or ``outbox_error`` incident.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from instrumentor.delivery.attempt import attempt
from instrumentor.delivery.destination import Destination
from instrumentor.delivery.outbox import OutboxError, OutboxRow, OutboxStore, Synchronous
from instrumentor.otel import suppress_instrumentation

if TYPE_CHECKING:
    from instrumentor.messages import Message
    from instrumentor.transports.base import Transport

__all__ = ["OutboxDestination"]

_IDLE_POLL = 0.5  # seconds between looks at the outbox when linger is 0 and nothing happens
_STORE_RETRY = 1.0  # seconds before claiming again after the outbox could not be read


class OutboxDestination(Destination):
    """A :class:`Destination` that keeps what it queues in an SQLite file until delivered.

    Args:
        transport: Where batches go.
        path: The outbox file (created if missing; its directory must exist).
        channel: The name this destination's rows carry in the file; by default the transport's
            class name. Processes of one application share a channel; two destinations sharing
            one file need different channels.
        max_rows: Messages the file may hold (all channels); beyond it new messages are
            dropped and counted (``dropped.outbox_full``).
        synchronous: ``"normal"`` survives a process crash; ``"full"`` also an OS crash or a
            power loss (an fsync per commit).
        lease: Seconds a claimed batch is reserved to this process; a process that dies leaves
            its batch to be claimed again after this (at once by a process on the same host).
        open_now: Open the file now (raising nothing: a problem is kept in
            :attr:`outbox_problem` and the destination works from memory); ``False`` defers
            the opening to the worker thread.
        **options: The options of :class:`Destination` (``max_queue``, ``batch_size``,
            ``linger``, ``retry``, ``on_drop``, ``name``).

    Attributes:
        outbox_problem: Why the outbox is not used, if it could not be opened.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        path: str | os.PathLike[str],
        channel: str | None = None,
        max_rows: int = 1_000_000,
        synchronous: Synchronous = "normal",
        lease: float = 60.0,
        open_now: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(transport, **options)
        self.path = os.fspath(path)
        self.channel = channel or type(transport).__qualname__
        self.outbox_problem: OutboxError | None = None
        self._resume_at = 0.0
        self._store: OutboxStore | None = OutboxStore(
            self.path, channel=self.channel, max_rows=max_rows, synchronous=synchronous, lease=lease
        )
        try:
            if open_now:
                self._store.open()
                self._counts.outbox_rows = self._store.pending()
            else:
                from instrumentor.delivery.outbox import check_path

                check_path(self.path)
        except OutboxError as exc:
            self.outbox_problem = exc
            self._store = None
        leftovers = self._counts.outbox_rows or not open_now
        if self._store is not None and leftovers and os.path.exists(self.path):
            self._start()  # deliver what an earlier process left

    # --- state -------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        super()._reset_state()
        store: OutboxStore | None = getattr(self, "_store", None)
        if store is not None:
            store.after_fork()  # the child opens its own connection
        self._resume_at = 0.0

    def _pending(self) -> int:
        return super()._pending() + (max(self._counts.outbox_rows, 0) if self._store else 0)

    # --- the worker --------------------------------------------------------------------------

    def _work(self) -> None:
        store = self._store
        if store is not None:
            try:
                store.open()
            except OutboxError as exc:  # found only now (deferred opening): work from memory
                self.outbox_problem = exc
                self._store = None
                self._report("outbox_unavailable", f"{exc}; delivering from memory", exc)
        if self._store is None:
            super()._work()
            return
        poll = self.linger if self.linger > 0 else _IDLE_POLL
        while True:
            self._wake.wait(poll)
            self._wake.clear()
            self._cycle(self._store)
            with self._lock:
                self._idle.notify_all()
                if self._stopping and self._may_stop(self._store):
                    return

    def _may_stop(self, store: OutboxStore) -> bool:
        if self._queue:
            return False
        if self._past_deadline() or self._counts.outbox_rows <= 0 or self._deadline is None:
            return True
        wall_deadline = time.time() + (self._deadline - time.monotonic())
        if self._resume_at >= wall_deadline:
            return True  # paused (a retry is due) beyond the deadline: the rows wait in the file
        try:
            return not store.due_before(wall_deadline)
        except OutboxError:
            return True

    def _cycle(self, store: OutboxStore) -> None:
        """Persist what is queued, then deliver due rows (persisting between batches)."""
        self._persist_queued(store)
        while not self._past_deadline() and time.time() >= self._resume_at:
            try:
                if store.pending() <= 0:
                    break
                rows = store.claim(self.batch_size)
            except OutboxError as exc:
                self._outbox_error("could not read the outbox", exc)
                self._resume_at = time.time() + _STORE_RETRY
                break
            if not rows:
                break
            self._deliver_rows(store, rows)
            self._persist_queued(store)
        self._refresh(store)

    def _refresh(self, store: OutboxStore, in_hand: int = 0, persisted: int = 0) -> None:
        try:
            rows = store.pending()
        except OutboxError:
            rows = self._counts.outbox_rows
        with self._lock:  # one step, so that flush never sees the batch in neither place
            self._counts.in_flight -= in_hand
            self._counts.persisted += persisted
            self._counts.outbox_rows = rows

    def _persist_queued(self, store: OutboxStore) -> None:
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            try:
                stored, refused = store.persist(batch)
            except OutboxError as exc:
                self._outbox_error(
                    "could not write to the outbox; this batch is delivered from "
                    "memory and the next one tries the outbox again",
                    exc,
                )
                self._deliver_batch(batch)
                continue
            self._refresh(store, in_hand=len(batch), persisted=stored)
            for message in refused:
                self._drop(message, "outbox_full")

    def _deliver_rows(self, store: OutboxStore, rows: list[OutboxRow]) -> None:
        started = time.monotonic()
        outcome = attempt(self.transport, [row for row in rows if row.message is not None])
        self._metrics.attempt(time.monotonic() - started)
        invalid = [row.id for row in rows if row.message is None]
        next_attempt_at = time.time()
        if outcome.retry:
            attempts = max(row.attempts for row in outcome.retry)
            next_attempt_at += self.retry.delay(attempts, outcome.retry_after)
            self._resume_at = next_attempt_at  # like a batch held at the queue's head
        try:
            store.settle(
                outcome.settled_ids() + invalid,
                [row.id for row in outcome.retry],
                next_attempt_at,
                outcome.error,
            )
        except OutboxError as exc:  # the rows stay leased; the lease expiring frees them
            self._outbox_error("could not record a delivery in the outbox", exc)
            self._resume_at = max(self._resume_at, time.time() + _STORE_RETRY)
        self._count_delivered(len(outcome.delivered), in_flight=False)
        refused: dict[str, list[Message]] = {}
        for row, reason in outcome.failed:
            refused.setdefault(reason, []).extend(_messages([row]))
        if outcome.too_large:
            refused["too_large"] = _messages(outcome.too_large)
        for reason, messages in refused.items():
            self._give_up(messages, reason, outcome.exception, in_flight=False)
        if invalid:
            self._drop(None, "invalid", len(invalid))
        if outcome.retry:
            with self._lock:
                self._counts.retried += len(outcome.retry)
            self._metrics.retried(len(outcome.retry))
            self._note_error(outcome.error or "delivery failed", outcome.exception)
        self._refresh(store)

    def _outbox_error(self, what: str, exc: OutboxError) -> None:
        self._counts.last_error = f"{what}: {exc}"
        self._report("outbox_error", f"{what}: {exc}", exc)

    def _report(self, kind: str, text: str, exc: BaseException | None) -> None:
        if self.report is not None:
            self.report(kind, f"destination {self.name}: {text}", exc)

    # --- flush and shutdown ------------------------------------------------------------------

    def _drain_inline(self, deadline: float) -> None:
        store = self._store
        if store is None:
            super()._drain_inline(deadline)
            return
        with suppress_instrumentation():
            self._cycle(store)

    def _finish_shutdown(self, deadline: float) -> None:
        super()._finish_shutdown(deadline)
        worker = self._worker
        if self._store is not None and (worker is None or not worker.is_alive()):
            self._store.close()


def _messages(rows: list[OutboxRow]) -> list[Message]:
    return [row.message for row in rows if row.message is not None]
