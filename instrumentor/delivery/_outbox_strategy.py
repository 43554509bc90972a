"""The outbox strategy: commit what the queue holds to an SQLite file, and deliver from there.

The caller's side is unchanged (a ``deque.append``). Two threads, each with its own connection:

* the **committer** (the destination's worker thread, running :meth:`OutboxStrategy.run`)
  commits the queue to the file every ``linger`` (or when a batch fills), whatever delivery is
  doing, so the crash window is ``linger``; it also renews this process's leases (every
  ``lease / 3``), notices a file deleted or replaced under it (a ``stat`` every few seconds)
  and reopens it, and gives free pages back;
* the **deliverer** (:mod:`~instrumentor.delivery._outbox_deliverer`) delivers what was stored.

A file locked by another process at open is tried again with backoff while events wait in
memory; a lasting problem (corrupt file, bad path) makes the destination deliver from memory
like the memory strategy. A write that fails later (a full disk) sends that batch from memory.
Every such problem is an ``outbox_unavailable``, ``outbox_error`` or ``outbox_unserved``
incident.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from instrumentor._otel import suppress_instrumentation
from instrumentor.delivery._destination import Destination
from instrumentor.delivery._outbox import OutboxError, OutboxStore, Synchronous
from instrumentor.delivery._outbox_deliverer import Deliverer, StoredBatch, record_rows
from instrumentor.delivery._strategy import Worker, deliver_from_memory
from instrumentor.exceptions import ConfigurationError

if TYPE_CHECKING:
    from instrumentor._messages import Message
    from instrumentor._protocols import Transport

__all__ = ["OutboxDestination", "OutboxStrategy", "channel_for", "default_lease"]

_OPEN_RETRY = (0.05, 2.0)  # backoff (first, longest) for opening a file another process locks
_IDENTITY_EVERY = 2.0  # seconds between checks that the file is still the one opened
_VACUUM_EVERY = 300.0  # seconds between incremental vacuums


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


class OutboxStrategy:
    """Keep what a destination queues in an SQLite file until it is delivered.

    Use it as ``Destination(transport, strategy=OutboxStrategy(path))`` (or
    :class:`OutboxDestination`). Options that depend on the destination (``channel``,
    ``lease``, ``dead_after``) are settled when it is attached.

    Args:
        path: The outbox file (created if missing; its directory must exist).
        channel: The name the destination's rows carry in the file; by default
            :func:`channel_for` the transport. Processes of one application share a channel;
            two destinations sharing one file need different channels.
        max_rows: Messages the file may hold (all channels, dead ones included); beyond it new
            messages are dropped and counted (``dropped.outbox_full``).
        synchronous: ``"normal"`` survives a process crash; ``"full"`` also an OS crash or a
            power loss (an fsync per commit).
        lease: Seconds a claimed batch is reserved to this process (renewed every third of it
            while held); by default :func:`default_lease` of the transport.
        dead_after: Failures blamed on a message itself (its batch-mates were accepted) after
            which its row is set aside as dead; by default the retry policy's ``max_attempts``.
        open_now: Open the file when attached, without waiting for another process's lock
            (raising nothing: a lasting problem is kept in :attr:`problem` and the destination
            works from memory; a lock makes the worker try again). ``False`` leaves every file
            access to the worker thread.

    Attributes:
        path: The outbox file.
        channel: The channel (once attached).
        lease: Seconds a claimed batch is reserved (once attached).
        dead_after: Strikes after which a row is dead (once attached).
        problem: Why the outbox is not used, if it cannot be.
        served_channels: Channels this process delivers (the configuration adds its other
            outbox destinations' channels); rows of other channels nobody served recently are
            reported once (``outbox_unserved``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        channel: str | None = None,
        max_rows: int = 1_000_000,
        synchronous: Synchronous = "normal",
        lease: float | None = None,
        dead_after: int | None = None,
        open_now: bool = True,
    ) -> None:
        bad_lease = lease is not None and lease <= 0
        if bad_lease or (dead_after is not None and dead_after < 1) or max_rows < 1:
            raise ConfigurationError("lease must be > 0, dead_after and max_rows >= 1")
        if synchronous not in ("normal", "full"):
            raise ConfigurationError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = os.fspath(path)
        self.max_rows = max_rows
        self.synchronous: Synchronous = synchronous
        self.channel = channel or ""
        self.lease = float(lease) if lease is not None else 0.0
        self.dead_after = dead_after or 0
        self.problem: OutboxError | None = None
        self.served_channels: set[str] = set()
        self._open_now = open_now
        self._worker: Worker | None = None
        self._usable = True

    # --- attached to a destination -----------------------------------------------------------

    def attach(self, worker: Worker) -> None:
        """Serve ``worker``: settle the options, and open the file unless ``open_now=False``.

        Raises:
            ConfigurationError: If it already serves another destination.
        """
        if self._worker is not None:
            raise ConfigurationError("a queue strategy serves one destination: build one for each")
        self._worker = worker
        self.channel = self.channel or channel_for(worker.transport)
        self.lease = self.lease or default_lease(worker.transport)
        self.dead_after = self.dead_after or worker.retry.max_attempts
        self.served_channels = {self.channel}
        self._reset()
        if self._open_now:
            self._open_at_attach(worker)

    def _reset(self) -> None:
        """The state a forked child rebuilds (a problem stays a problem)."""
        options: dict[str, Any] = {
            "channel": self.channel,
            "max_rows": self.max_rows,
            "synchronous": self.synchronous,
            "lease": self.lease,
        }
        self._writer = OutboxStore(self.path, **options)
        self._reader = OutboxStore(self.path, owner=self._writer.owner, **options)
        self._deliverer = Deliverer(self._attached(), self._reader, self.dead_after)
        self._opened = False
        self._checked_unserved = False
        now = time.monotonic()
        self._next_identity = self._next_heartbeat = now
        self._next_vacuum = now + _VACUUM_EVERY

    def _open_at_attach(self, worker: Worker) -> None:
        try:
            self._writer.open(busy_timeout=0)
        except OutboxError as exc:
            if not exc.is_locked():
                self._give_up(exc)
                return
            worker.start()  # locked by another process: the worker tries again
            return
        self._opened = True
        rows = self._writer.pending()
        worker.record_outbox(rows)
        if rows:
            worker.start()  # deliver what an earlier process left

    def _attached(self) -> Worker:
        if self._worker is None:
            raise RuntimeError("the strategy is not attached to a destination")
        return self._worker

    @property
    def writer(self) -> OutboxStore:
        """The store the committer writes through (its own connection)."""
        return self._writer

    # --- the committer (the destination's worker thread) ----------------------------------------

    def run(self) -> None:
        """Commit the queue to the file until shut down; deliver from memory if it is unusable."""
        worker = self._attached()
        open_delay, next_open = _OPEN_RETRY[0], 0.0
        if self._opened:  # opened when attached
            self._report_unserved()
            self._deliverer.start()
        while self._usable:
            if not self._opened and (time.monotonic() >= next_open or worker.stopping):
                if self._open():
                    self._deliverer.start()
                else:
                    next_open = time.monotonic() + open_delay
                    open_delay = min(open_delay * 2, _OPEN_RETRY[1])
            if self._opened:
                if self._persist_queued():
                    self._deliverer.wake()
                self._housekeeping()
            elif worker.stopping and self._usable:  # still locked at shutdown: memory it is
                worker.deliver_queued(worker.deadline or time.monotonic())
            worker.notify_idle()
            if worker.should_stop():
                self._deliverer.wake()
                self._deliverer.join(worker.deadline)
                return
            if worker.wait_for_work(self._committer_wait(next_open)):
                self._deliverer.wake()  # a flush or a full batch: the deliverer looks too
        deliver_from_memory(worker)  # the outbox cannot be used

    def _committer_wait(self, next_open: float) -> float:
        worker = self._attached()
        now = time.monotonic()
        waits = [self.lease / 3, self._next_identity - now, _IDENTITY_EVERY]
        if worker.linger > 0:
            waits.append(worker.linger)
        if not self._opened:
            waits.append(next_open - now)
        return max(min(waits), 0.001)

    def _open(self) -> bool:
        """Open the file; ``False`` if it is locked (try later) or unusable (memory from now)."""
        worker = self._attached()
        try:
            self._writer.open(busy_timeout=0.2)
            rows = self._writer.pending()
        except OutboxError as exc:
            if not exc.is_locked():
                self._give_up(exc)
                worker.incident("outbox_unavailable", f"{exc}; delivering from memory", exc)
            return False
        self._opened = True
        worker.record_outbox(rows)
        self._report_unserved()
        return True

    def _give_up(self, exc: OutboxError) -> None:
        self.problem = exc
        self._usable = False
        self._deliverer.stop()
        self._attached().record_outbox(0)

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
            self._attached().incident(
                "outbox_unserved",
                f"the outbox {self.path} holds messages of channels no destination serves "
                f"({counts}); they are not delivered: deliver them with "
                "instrumentor.delivery.drain(path, transport, channel=...) or delete them "
                "with purge(path)",
            )

    def _persist_queued(self) -> int:
        worker = self._attached()
        stored_total = 0
        while worker.queue_depth:
            batch = worker.next_batch()
            if batch:
                stored_total += self._persist(worker, batch)
        return stored_total

    def _persist(self, worker: Worker, batch: list[Message]) -> int:
        """Commit one in-flight batch; return how many messages were stored.

        A message that cannot be stored as JSON is given up alone (``invalid_message``); a
        batch the file refuses is delivered from memory.
        """
        invalid: list[tuple[Message, str]] = []

        def note(message: Message, reason: str) -> None:
            invalid.append((message, reason))

        try:
            if self._deliverer.accepts_handoff():
                rows, refused = self._writer.persist_leased(batch, on_invalid=note)
                if rows:
                    self._deliverer.hand_off(StoredBatch(rows, self._writer.identity))
                stored = len(rows)
            else:
                stored, refused = self._writer.persist(batch, on_invalid=note)
                self._deliverer.stored_unleased()
        except OutboxError as exc:
            self._outbox_error(
                "could not write to the outbox; this batch is delivered from memory and "
                "the next one tries the outbox again",
                exc,
            )
            self._deliverer.fall_back(batch)  # the invalid too: memory refuses them alone
            return 0
        record_rows(worker, self._writer, in_hand=len(batch), persisted=stored)
        for message in refused:
            worker.drop(message, "outbox_full")
        for message, reason in invalid:
            worker.give_up([message], reason, None, in_flight=False)
        return stored

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
        self._attached().incident(
            "outbox_error",
            f"the outbox {self.path} was deleted or replaced while in use; opening it again "
            "(what the old file held is gone with it, unless it was moved aside together with "
            "its -wal and -shm files)",
        )
        self._writer.close()
        self._reader.close()
        self._opened = False
        self._opened = self._open()

    def _outbox_error(self, what: str, exc: OutboxError) -> None:
        self._attached().incident("outbox_error", f"{what}: {exc}", exc, record=True)

    # --- flush, shutdown and fork ----------------------------------------------------------------

    def pending(self) -> int:
        """Messages of the channel in the file (while the file is used)."""
        return self._attached().outbox_rows if self._usable else 0

    def threads(self) -> Sequence[threading.Thread]:
        """The deliverer's thread, once started."""
        thread = self._deliverer.thread
        return (thread,) if thread is not None else ()

    def drain_inline(self, deadline: float) -> None:
        """No thread could start (interpreter exit): commit the queue to the file, if it can."""
        worker = self._attached()
        if self._usable and (self._opened or self._open()):
            with suppress_instrumentation():
                self._persist_queued()
        if worker.queue_depth or self._deliverer.has_fallback:
            worker.deliver_queued(deadline)
            self._deliverer.deliver_fallback(deadline)

    def after_fork(self) -> None:
        """In a forked child: its own connections, lease owner and deliverer."""
        for store in (self._writer, self._reader):
            store.after_fork()
        self._reset()

    def close(self) -> None:
        """Close both connections."""
        self._writer.close()
        self._reader.close()

    def __repr__(self) -> str:
        return f"OutboxStrategy({self.path!r}, channel={self.channel!r})"


class OutboxDestination(Destination):
    """A :class:`Destination` composed with an :class:`OutboxStrategy`: a constructor, no more.

    ``OutboxDestination(transport, path=..., ...)`` is
    ``Destination(transport, strategy=OutboxStrategy(path, ...), ...)``.

    Args:
        transport: Where batches go.
        path: The outbox file; see :class:`OutboxStrategy` for it and the other outbox options.
        channel: See :class:`OutboxStrategy`.
        max_rows: See :class:`OutboxStrategy`.
        synchronous: See :class:`OutboxStrategy`.
        lease: See :class:`OutboxStrategy`.
        dead_after: See :class:`OutboxStrategy`.
        open_now: See :class:`OutboxStrategy`.
        **options: The options of :class:`Destination` (``max_queue``, ``batch_size``,
            ``linger``, ``retry``, ``on_drop``, ``name``).
    """

    strategy: OutboxStrategy

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
        strategy = OutboxStrategy(
            path,
            channel=channel,
            max_rows=max_rows,
            synchronous=synchronous,
            lease=lease,
            dead_after=dead_after,
            open_now=open_now,
        )
        super().__init__(transport, strategy=strategy, **options)
