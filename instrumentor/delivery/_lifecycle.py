"""Every destination of the process at once: flush, shutdown, retirement, exit and fork.

At interpreter exit a flush bounded by the exit timeout runs (also from ``multiprocessing``'s
finalizers, whose children skip ``atexit``); in a forked child every destination starts over
(:meth:`Destination.after_fork`) and the counters' history is the parent's.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import threading
import time
from collections.abc import Sequence

from instrumentor._state import current
from instrumentor.delivery._destination import Destination, live_destinations
from instrumentor.delivery._stats import FlushResult, forget_history, totals

__all__ = ["counters", "flush_all", "retire", "set_exit_timeout", "shutdown_all"]


def _installed_exit_timeout() -> float:
    """The installed configuration's exit timeout: this module may load after it was set."""
    runtime = current()
    return float(runtime.settings.exit_timeout) if runtime is not None else 2.0


_exit_timeout = _installed_exit_timeout()


def counters() -> dict[str, int]:
    """Delivery counters summed over every destination this process has had."""
    total = totals()
    depth = sum(destination.queue_depth for destination in live_destinations())
    total["enqueued"] += depth
    total["queue_depth"] = depth
    return {key: value for key, value in total.items() if value}


def set_exit_timeout(seconds: float) -> None:
    """Seconds the flush at interpreter exit may take in total (``0`` disables it)."""
    global _exit_timeout
    _exit_timeout = float(seconds)


def _shut_down_together(destinations: Sequence[Destination], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for destination in destinations:
        destination.begin_shutdown(deadline)
    for destination in destinations:
        destination.finish_shutdown(deadline)


def retire(destinations: Sequence[Destination], timeout: float) -> None:
    """Shut ``destinations`` down together within ``timeout`` seconds, off the caller's thread.

    For destinations a new configuration replaced: what they still hold is delivered, then
    their transports are closed. At interpreter shutdown (no new threads) it runs inline with
    at most half a second.
    """
    if not destinations:
        return
    targets = list(destinations)
    thread = threading.Thread(
        target=_shut_down_together,
        args=(targets, timeout),
        name="instrumentor-retire",
        daemon=True,
    )
    try:
        thread.start()
    except RuntimeError:  # interpreter shutdown (3.12+): no threads; a short inline flush
        _shut_down_together(targets, min(timeout, 0.5))


def shutdown_all(timeout: float) -> FlushResult:
    """Shut every destination of this process down in parallel within ``timeout`` in total.

    Includes destinations already closed whose worker is still delivering (e.g. ones a new
    configuration replaced a moment ago).
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    targets = [d for d in live_destinations() if d.active]
    marks = [d.settled() for d in targets]
    for destination in targets:
        destination.begin_shutdown(deadline)
    for destination in targets:
        destination.finish_shutdown(deadline)
    result = FlushResult()
    for destination, mark in zip(targets, marks, strict=True):
        result = result + destination.result_since(mark)
    return result


def flush_all(timeout: float) -> FlushResult:
    """Flush every open destination within ``timeout`` seconds in total."""
    deadline = time.monotonic() + max(timeout, 0.0)
    result = FlushResult()
    for destination in [d for d in live_destinations() if not d.closed]:
        result = result + destination.flush(max(deadline - time.monotonic(), 0.0))
    return result


def _flush_at_exit() -> None:
    if _exit_timeout > 0:
        shutdown_all(_exit_timeout)


def _after_fork_in_child() -> None:
    forget_history()  # the parent's counters are the parent's
    for destination in live_destinations():
        destination.after_fork()  # a closed destination stays closed


def _in_multiprocessing_child(_: object) -> None:
    # multiprocessing children end with os._exit, which skips atexit: flush from its finalizers.
    multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=100)


class _Anchor:
    """A long-lived object for multiprocessing.util.register_after_fork (it keeps a weakref)."""


_anchor = _Anchor()
atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
multiprocessing.util.register_after_fork(_anchor, _in_multiprocessing_child)
