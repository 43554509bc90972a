"""Sender threads: a few long-lived daemon threads that run a call's tasks alongside the caller.

An HTTP transport that sends several requests at once (Accoil: one per message, several users'
sequences concurrently) keeps them between calls: threads started per call cost more than the
requests they send on a fast network.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence

from instrumentor._otel import suppress_instrumentation

__all__ = ["SenderThreads"]


class _Job:
    """One call's tasks, each taken by whichever thread is free, in order."""

    def __init__(self, tasks: Sequence[Callable[[], None]]) -> None:
        self._tasks = deque(tasks)
        self._left = len(tasks)
        self._lock = threading.Lock()
        self.done = threading.Event()
        if not tasks:
            self.done.set()

    def work(self) -> None:
        """Run tasks until none is left to take (others may still be running elsewhere)."""
        while True:
            try:
                task = self._tasks.popleft()
            except IndexError:
                return
            try:
                task()
            except Exception:  # a bug: the caller finds the task's work undone
                pass
            finally:
                with self._lock:
                    self._left -= 1
                    if not self._left:
                        self.done.set()


#: How long :meth:`SenderThreads.close` waits for the threads to end (idle ones end at once).
_CLOSE_WAIT = 1.0


class SenderThreads:
    """Long-lived daemon threads that run a call's tasks with the thread that made the call.

    Started on first need, up to ``size``, and kept for the next calls; ended by :meth:`close`,
    or when this object is garbage-collected (the threads do not keep it alive). Hold them in a
    :class:`~instrumentor.transports._http.ClientHolder`: a forked child inherits none of them
    and builds its own.

    Not a ThreadPoolExecutor: its threads are joined (without a timeout) before any atexit hook
    runs, and it refuses work during interpreter shutdown, which is exactly when the bounded exit
    flush delivers. Daemon threads end with the process; if none can be started (interpreter
    shutdown on 3.12+), the calling thread runs every task itself.

    Args:
        size: The most threads (the calling thread comes on top).
        name: The threads' name.
    """

    def __init__(self, size: int, name: str = "instrumentor-sender") -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._stopper = weakref.finalize(self, _stop, self._queue, size)
        self._stopper.atexit = False  # at exit they still serve the exit flush; daemons end after

    def run(self, tasks: Sequence[Callable[[], None]], helpers: int) -> None:
        """Run ``tasks`` on this thread and up to ``helpers`` others; return when all are done.

        Tasks are taken in order, each by one thread. The calling thread works too, on its own
        tasks only: they get done even when every thread is busy with another call's, or none
        could start. A task that raises an exception ends there; the others still run.
        """
        job = _Job(tasks)
        for _ in range(self._started(helpers)):
            self._queue.put(job)
        with suppress_instrumentation():  # a delivery thread: its own requests are not traced
            job.work()
        job.done.wait()

    def _started(self, wanted: int) -> int:
        """Start threads until ``wanted`` exist (at most ``size``); how many can help."""
        wanted = min(wanted, self._size)
        if len(self._threads) < wanted:
            with self._lock:
                while len(self._threads) < wanted and not self._closed:
                    thread = threading.Thread(
                        target=_serve, args=(self._queue,), name=self._name, daemon=True
                    )
                    try:
                        thread.start()
                    except RuntimeError:  # interpreter shutdown: no new threads
                        break
                    self._threads.append(thread)
        return min(wanted, len(self._threads))

    def close(self) -> None:
        """Stop the threads: idle ones end at once, a busy one after its task."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        self._stopper()
        deadline = time.monotonic() + _CLOSE_WAIT
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.0))


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    """A sender thread's life: run the jobs it is handed until it is told to stop."""
    with suppress_instrumentation():
        while True:
            job = jobs.get()
            if job is None:
                return
            job.work()  # leaves the job empty: the thread keeps no task, nor what it refers to


def _stop(jobs: queue.SimpleQueue[_Job | None], threads: int) -> None:
    for _ in range(threads):
        jobs.put(None)
