"""A destination that commits what it queues to the SQLite outbox, and delivers from there.

The caller's side is unchanged (a ``deque.append``). Two threads, each with its own connection:

* the **committer** (the destination's worker) commits the queue to the file every ``linger``
  (or when a batch fills), whatever delivery is doing, so the crash window is ``linger``; it
  also renews this process's leases (every ``lease / 3``), notices a file deleted or replaced
  under it (a ``stat`` every few seconds) and reopens it, and gives free pages back;
* the **deliverer** delivers: first the batches the committer just stored already leased to
  this process (from memory: no claim, no decoding), then rows claimed from the file (retries,
  other processes' leftovers), and records each outcome (:mod:`.outbox_attempt`).

A file locked by another process at open is tried again with backoff while events wait in
memory; a lasting problem (corrupt file, bad path) makes the destination deliver from memory
like a plain :class:`Destination`. A write that fails later (a full disk) sends that batch from
memory. Every such problem is an ``outbox_unavailable``, ``outbox_error`` or
``outbox_unserved`` incident.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from instrumentor._otel import suppress_instrumentation
from instrumentor.delivery._destination import Destination
from instrumentor.delivery._outbox import OutboxError, OutboxRow, OutboxStore, Synchronous
from instrumentor.delivery._outbox_attempt import RowsOutcome, attempt_rows
from instrumentor.exceptions import ConfigurationError

if TYPE_CHECKING:
    from instrumentor._messages import Message
    from instrumentor._protocols import Transport

__all__ = ["OutboxDestination", "channel_for", "default_lease"]

_IDLE_POLL = 0.5  # seconds between looks at the file for rows of other processes and retries
_STORE_RETRY = 1.0  # seconds before claiming again after the outbox could not be read
_OPEN_RETRY = (0.05, 2.0)  # backoff (first, longest) for opening a file another process locks
_IDENTITY_EVERY = 2.0  # seconds between checks that the file is still the one opened
_VACUUM_EVERY = 300.0  # seconds between incremental vacuums
_HANDOFF = 2  # batches stored leased to this process that may wait for its deliverer


def channel_for(transport: Transport) -> str:
    """The outbox channel of ``transport``: its ``outbox_channel`` if it has one, else its class.

    Accoil and Segment transports name class, endpoint and a fingerprint of the key (never
    the key), so rows stored under an old key or endpoint are not sent with a new one.
    """
    channel = getattr(transport, "outbox_channel", None)
    return channel if isinstance(channel, str) and channel else type(transport).__qualname__


def default_lease(transport: Transport) -> float:
    """Seconds a claimed batch is reserved: three transport timeouts, at least 30 s.

    The lease is renewed every third of it while this process holds the rows, so it only has
    to outlast a stall of the renewing thread, not a whole attempt.
    """
    timeout = getattr(transport, "timeout", None)
    seconds = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else 10.0
    return max(30.0, 3 * seconds)


@dataclass
class _Batch:
    rows: list[OutboxRow]
    identity: tuple[int, int] | None


class OutboxDestination(Destination):
    """A :class:`Destination` that keeps what it queues in an SQLite file until delivered.

    Args:
        transport: Where batches go.
        path: The outbox file (created if missing; its directory must exist).
        channel: The name this destination's rows carry in the file; by default
            :func:`channel_for` the transport. Processes of one application share a channel;
            two destinations sharing one file need different channels.
        max_rows: Messages the file may hold (all channels, dead ones included); beyond it new
            messages are dropped and counted (``dropped.outbox_full``).
        synchronous: ``"normal"`` survives a process crash; ``"full"`` also an OS crash or a
            power loss (an fsync per commit).
        lease: Seconds a claimed batch is reserved to this process (renewed every third of it
            while held); by default :func:`default_lease`.
        dead_after: Failures blamed on a message itself (its batch-mates were accepted) after
            which its row is set aside as dead; by default the retry policy's ``max_attempts``.
        open_now: Open the file now, without waiting for another process's lock (raising
            nothing: a lasting problem is kept in :attr:`outbox_problem` and the destination
            works from memory; a lock makes the worker try again). ``False`` leaves every file
            access to the worker thread.
        **options: The options of :class:`Destination` (``max_queue``, ``batch_size``,
            ``linger``, ``retry``, ``on_drop``, ``name``).

    Attributes:
        outbox_problem: Why the outbox is not used, if it cannot be.
        served_channels: Channels this process delivers (set by the configuration); rows of
            other channels nobody served recently are reported once (``outbox_unserved``).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        path: str | os.PathLike[str],
        channel: str | None = None,
        max_rows: int = 1_000_000,
        synchronous: Synchronous = "normal",
        lease: float | None = None,
        dead_after: int | None = None,
        open_now: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(transport, **options)
        self.path = os.fspath(path)
        self.channel = channel or channel_for(transport)
        self.lease = float(lease) if lease is not None else default_lease(transport)
        self.dead_after = dead_after if dead_after is not None else self.retry.max_attempts
        if self.lease <= 0 or self.dead_after < 1 or max_rows < 1:
            raise ConfigurationError("lease must be > 0, dead_after and max_rows >= 1")
        if synchronous not in ("normal", "full"):
            raise ConfigurationError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.max_rows = max_rows
        self.synchronous: Synchronous = synchronous
        self.outbox_problem: OutboxError | None = None
        self.served_channels: set[str] = {self.channel}
        self._usable = True
        self._new_stores()
        if open_now:
            try:
                self._writer.open(busy_timeout=0)
            except OutboxError as exc:
                if not exc.is_locked():
                    self._give_up_outbox(exc)
                    return
                self._start()  # locked by another process: the worker tries again
                return
            self._opened = True
            self._counts.outbox_rows = self._writer.pending()
            if self._counts.outbox_rows:
                self._start()  # deliver what an earlier process left

    # --- state, rebuilt in a forked child ----------------------------------------------------

    def _reset_state(self) -> None:
        super()._reset_state()
        self._handoff: deque[_Batch] = deque()
        self._fallback: deque[list[Message]] = deque()  # batches the file refused
        self._unsettled: list[tuple[RowsOutcome, tuple[int, int] | None]] = []
        self._ready = threading.Event()
        self._deliverer: threading.Thread | None = None
        self._opened = False
        self._resume_at = 0.0  # Unix time: the channel pauses after the provider failed
        self._failures = 0  # attempts in a row that failed as a whole
        self._provider_up = True
        self._claim_after = 0.0  # Unix time before which an empty claim is not repeated
        self._next_due = 0.0  # Unix time: the first row this process handed back is due again
        self._from_file = False  # alternate: a handed-off batch, then a claimed one
        self._checked_unserved = False
        now = time.monotonic()
        self._next_identity = self._next_heartbeat = now
        self._next_vacuum = now + _VACUUM_EVERY
        if hasattr(self, "path"):  # a forked child: its own connections and lease owner
            for store in (self._writer, self._reader):
                store.after_fork()
            self._new_stores()

    def _new_stores(self) -> None:
        options: dict[str, Any] = {
            "channel": self.channel,
            "max_rows": self.max_rows,
            "synchronous": self.synchronous,
            "lease": self.lease,
        }
        self._writer = OutboxStore(self.path, **options)
        self._reader = OutboxStore(self.path, owner=self._writer.owner, **options)

    def _pending(self) -> int:
        return super()._pending() + (max(self._counts.outbox_rows, 0) if self._usable else 0)

    def _threads(self) -> list[threading.Thread]:
        return [t for t in (self._worker, self._deliverer) if t is not None]

    # --- the committer (the destination's worker) ----------------------------------------------

    def _work(self) -> None:
        open_delay, next_open = _OPEN_RETRY[0], 0.0
        if self._opened:  # opened by the constructor
            self._report_unserved()
            self._start_deliverer()
        while self._usable:
            if not self._opened and (time.monotonic() >= next_open or self._stopping):
                if self._open():
                    self._start_deliverer()
                else:
                    next_open = time.monotonic() + open_delay
                    open_delay = min(open_delay * 2, _OPEN_RETRY[1])
            if self._opened:
                if self._persist_queued():
                    self._ready.set()
                self._housekeeping()
            elif self._stopping and self._usable:  # still locked at shutdown: memory it is
                Destination._drain_inline(self, self._deadline or time.monotonic())
            with self._lock:
                self._idle.notify_all()
                stopping = self._stopping
            if stopping and (not self._queue or self._past_deadline()):
                self._ready.set()
                deliverer = self._deliverer
                if deliverer is not None and self._deadline is not None:
                    deliverer.join(max(self._deadline - time.monotonic(), 0.0))
                return
            self._wake.wait(self._committer_wait(next_open))
            if self._wake.is_set():
                self._wake.clear()
                self._ready.set()  # a flush or a full batch: the deliverer looks too
        super()._work()  # the outbox cannot be used: deliver from memory

    def _committer_wait(self, next_open: float) -> float:
        now = time.monotonic()
        waits = [self.lease / 3, self._next_identity - now, _IDENTITY_EVERY]
        if self.linger > 0:
            waits.append(self.linger)
        if not self._opened:
            waits.append(next_open - now)
        return max(min(waits), 0.001)

    def _open(self) -> bool:
        """Open the file; ``False`` if it is locked (try later) or unusable (memory from now)."""
        try:
            self._writer.open(busy_timeout=0.2)
            rows = self._writer.pending()
        except OutboxError as exc:
            if not exc.is_locked():
                self._give_up_outbox(exc)
                self._report("outbox_unavailable", f"{exc}; delivering from memory", exc)
            return False
        self._opened = True
        with self._lock:
            self._counts.outbox_rows = rows
        self._report_unserved()
        return True

    def _give_up_outbox(self, exc: OutboxError) -> None:
        self.outbox_problem = exc
        self._usable = False
        with self._lock:
            self._counts.outbox_rows = 0

    def _report_unserved(self) -> None:
        if self._checked_unserved:
            return
        self._checked_unserved = True
        try:
            unserved = self._writer.unserved(self.served_channels, 3 * self.lease)
        except OutboxError:
            return
        if unserved:
            counts = ", ".join(f"{channel!r}: {n}" for channel, n in sorted(unserved.items()))
            self._report(
                "outbox_unserved",
                f"the outbox {self.path} holds messages of channels no destination serves "
                f"({counts}); they are not delivered: deliver them with "
                "instrumentor.delivery.drain(path, transport, channel=...) or delete them "
                "with purge(path)",
                None,
            )

    def _persist_queued(self) -> int:
        stored_total = 0
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            leased = len(self._handoff) < _HANDOFF and time.time() >= self._resume_at
            try:
                if leased:
                    rows, refused = self._writer.persist_leased(batch)
                    if rows:
                        self._handoff.append(_Batch(rows, self._writer.identity))
                    stored = len(rows)
                else:
                    stored, refused = self._writer.persist(batch)
                    self._claim_after = 0.0
            except OutboxError as exc:
                self._outbox_error(
                    "could not write to the outbox; this batch is delivered from memory and "
                    "the next one tries the outbox again",
                    exc,
                )
                self._fallback.append(batch)
                self._ready.set()
                continue
            self._refresh(self._writer, in_hand=len(batch), persisted=stored)
            for message in refused:
                self._drop(message, "outbox_full")
            stored_total += stored
        return stored_total

    def _housekeeping(self) -> None:
        now = time.monotonic()
        try:
            if now >= self._next_identity:
                self._next_identity = now + _IDENTITY_EVERY
                if self._writer.replaced():
                    self._reopen()
                    return
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + self.lease / 3
                self._writer.renew()
            if now >= self._next_vacuum:
                self._next_vacuum = now + _VACUUM_EVERY
                self._writer.vacuum()
        except OutboxError as exc:
            self._outbox_error("could not maintain the outbox", exc)

    def _reopen(self) -> None:
        """The file was deleted or replaced under this process: start on a new one."""
        self._report(
            "outbox_error",
            f"the outbox {self.path} was deleted or replaced while in use; opening it again "
            "(what the old file held is gone with it, unless it was moved aside together with "
            "its -wal and -shm files)",
            None,
        )
        self._writer.close()
        self._reader.close()
        self._opened = False
        self._opened = self._open()

    def _refresh(self, store: OutboxStore, in_hand: int = 0, persisted: int = 0) -> None:
        try:
            rows = store.pending()
        except OutboxError:
            rows = self._counts.outbox_rows + persisted
        with self._lock:  # one step, so that flush never sees the batch in neither place
            self._counts.in_flight -= in_hand
            self._counts.persisted += persisted
            self._counts.outbox_rows = rows

    # --- the deliverer -----------------------------------------------------------------------

    def _start_deliverer(self) -> None:
        with self._lock:
            if self._deliverer is not None and self._deliverer.is_alive():
                return
            thread = threading.Thread(
                target=self._deliver_loop, name=f"instrumentor-{self.name}-deliver", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # interpreter shutdown: the rows wait in the file
                return
            self._deliverer = thread

    def _deliver_loop(self) -> None:
        with suppress_instrumentation():
            try:
                while self._usable:
                    worked = self._deliver_step()
                    if self._deliverer_done():
                        return
                    if not worked:
                        self._ready.wait(self._deliverer_wait())
                        self._ready.clear()
            except BaseException as exc:
                self._note_error(f"the outbox deliverer stopped: {type(exc).__name__}", exc)
            finally:
                with self._lock:
                    self._idle.notify_all()

    def _deliver_step(self) -> bool:
        """Deliver one batch if one is ready; whether it did."""
        if self._fallback:
            self._deliver_batch(self._fallback.popleft())
            return True
        if self._unsettled:
            self._settle_again()
        if self._past_deadline() or time.time() < self._resume_at:
            return False
        batch: _Batch | None = None
        if self._handoff and not (self._from_file and self._file_has_more()):
            batch = self._handoff.popleft()
        elif self._file_has_more() and time.time() >= self._claim_after:
            try:
                rows = self._reader.claim(self.batch_size)
            except OutboxError as exc:
                self._outbox_error("could not read the outbox", exc)
                self._claim_after = time.time() + _STORE_RETRY
                return False
            if rows:
                batch = _Batch(rows, self._reader.identity)
            else:
                now = time.time()
                due = self._next_due if self._next_due > now else now + _IDLE_POLL
                self._claim_after = min(now + _IDLE_POLL, due)
                self._refresh(self._reader)  # other processes may have delivered them
                if self._handoff:
                    batch = self._handoff.popleft()
        if batch is None:
            return False
        self._from_file = not self._from_file
        self._deliver_rows(batch)
        return True

    def _file_has_more(self) -> bool:
        """Whether the file may hold rows of this channel besides the handed-off ones."""
        handed = sum(len(batch.rows) for batch in self._handoff)
        return self._counts.outbox_rows > handed

    def _deliverer_wait(self) -> float:
        now = time.time()
        wait = min(_IDLE_POLL, max(self._resume_at, self._claim_after) - now)
        if self._deadline is not None:
            wait = min(wait, self._deadline - time.monotonic())
        return max(wait, 0.001)

    def _deliverer_done(self) -> bool:
        """At shutdown: whether nothing is left that can be delivered before the deadline."""
        if not self._stopping:
            return False
        if self._past_deadline() or self._deadline is None:
            return True
        if self._queue or self._counts.in_flight > 0 or self._fallback or self._handoff:
            return False
        if self._counts.outbox_rows <= 0:
            return True
        wall_deadline = time.time() + (self._deadline - time.monotonic())
        if self._resume_at >= wall_deadline:
            return True  # paused (a retry is due) beyond the deadline: the rows wait in the file
        try:
            return not self._reader.due_before(wall_deadline)
        except OutboxError:
            return True

    def _deliver_rows(self, batch: _Batch) -> None:
        started = time.monotonic()
        result = attempt_rows(
            self.transport,
            batch.rows,
            policy=self.retry,
            dead_after=self.dead_after,
            provider_up=self._provider_up,
        )
        self._metrics.attempt(time.monotonic() - started)
        try:
            result.settle(self._reader, batch.identity)
        except OutboxError as exc:  # the rows stay leased (renewed): recorded when it works
            self._outbox_error("could not record a delivery in the outbox; trying again", exc)
            self._unsettled.append((result, batch.identity))
        self._account(result)
        self._refresh(self._reader)

    def _settle_again(self) -> None:
        while self._unsettled:
            result, identity = self._unsettled[0]
            try:
                result.settle(self._reader, identity)
            except OutboxError:
                return
            self._unsettled.pop(0)

    def _account(self, result: RowsOutcome) -> None:
        outcome = result.outcome
        self._count_delivered(len(outcome.delivered), in_flight=False)
        for reason, messages in outcome.refused().items():
            self._give_up(messages, reason, outcome.exception, in_flight=False)
        if result.dead:
            self._give_up(
                result.dead_messages, result.dead[0][1], outcome.exception, in_flight=False
            )
        if result.invalid:
            self._drop(None, "invalid", result.invalid)
        if result.retry:
            with self._lock:
                self._counts.retried += len(result.retry)
            self._metrics.retried(len(result.retry))
            self._note_error(outcome.error or "delivery failed", outcome.exception)
            due = result.next_due()
            if due is not None:
                now = time.time()
                self._next_due = min(self._next_due, due) if self._next_due > now else due
                if self._claim_after > now:
                    self._claim_after = min(self._claim_after, due)
        if outcome.delivered or outcome.failed or outcome.too_large:
            self._failures, self._provider_up = 0, True
        elif result.provider_down:
            self._failures += 1
            self._provider_up = False
            self._resume_at = time.time() + self.retry.delay(self._failures, outcome.retry_after)

    def _outbox_error(self, what: str, exc: OutboxError) -> None:
        self._counts.last_error = f"{what}: {exc}"
        self._report("outbox_error", f"{what}: {exc}", exc)

    def _report(self, kind: str, text: str, exc: BaseException | None) -> None:
        if self.report is not None:
            self.report(kind, f"destination {self.name}: {text}", exc)

    # --- flush and shutdown ------------------------------------------------------------------

    def _drain_inline(self, deadline: float) -> None:
        """No thread could start (interpreter exit): commit the queue to the file, if it can."""
        if self._usable and (self._opened or self._open()):
            with suppress_instrumentation():
                self._persist_queued()
        if self._queue or self._fallback:
            super()._drain_inline(deadline)
            while self._fallback and time.monotonic() < deadline:
                self._deliver_batch(self._fallback.popleft())

    def finish_shutdown(self, deadline: float) -> None:
        super().finish_shutdown(deadline)
        if self._pid == os.getpid() and not any(t.is_alive() for t in self._threads()):
            self._writer.close()
            self._reader.close()
