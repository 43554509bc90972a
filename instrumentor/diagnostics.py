"""What goes wrong at run time: counted, logged at a bounded rate, and handed to a hook.

Run-time problems never raise into business code. Each is an :class:`Incident`: it increments a
counter that :func:`stats` reports, it is logged on the ``instrumentor`` logger the first time for
its site and then at most once a minute with the number suppressed, and it is passed to the
``on_error`` hook given to ``configure()``. Incidents that outside input can cause at any rate
(the frontend endpoint's rejections) are *sampled*: the hook, like the log, hears of them once a
minute per key, with the number left out. What is normal rather than wrong (an anonymous request)
is only counted, and logged at debug level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Incident", "reset_stats", "stats"]

_log = logging.getLogger("instrumentor")
_LOG_INTERVAL = 60.0
_TRACEBACK_KINDS = frozenset({"internal_error", "receiver_error"})


@dataclass(frozen=True)
class Incident:
    """One run-time problem, as passed to the ``on_error`` hook.

    Attributes:
        kind: What happened: ``"missing_user"``, ``"missing_group"``, ``"receiver_error"``,
            ``"deprecated_event"``, ``"invalid_event"``, ``"invalid_group_level"``,
            ``"internal_error"``, ``"invalid_context"``, ``"invalid_properties"``,
            ``"invalid_group_id"``, ``"bad_configuration"``, and from the frontend endpoint
            and middleware (sampled): ``"identity_error"``, ``"frontend_rejected"`` and
            ``"frontend_hook_error"``. (:func:`stats` also counts ``"hook_error"``, an
            ``on_error`` hook that raised, ``"log_error"``, a log handler that raised, and,
            not incidents, ``"identity_missing"``, an anonymous request, and
            ``"frontend_disconnected"``, a client gone mid-body.)
        message: A sentence saying what happened and what to do.
        event: The event name concerned, if any.
        site: Where it happened (the decorated function, or the event for imperative calls).
        error: The exception behind it, if any.
    """

    kind: str
    message: str
    event: str | None = None
    site: str | None = None
    error: BaseException | None = None


class _Diagnostics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.last_logged: dict[tuple[str, str], float] = {}
        self.suppressed: Counter[tuple[str, str]] = Counter()

    def report(
        self,
        incident: Incident,
        hook: Callable[[Incident], None] | None,
        key: str | None = None,
        *,
        sampled: bool = False,
    ) -> None:
        """Count, log (once per kind and key per interval) and hand to ``hook``.

        ``sampled`` hands it to ``hook`` only when it is logged, with the number left out since.
        """
        log_key = (incident.kind, key or incident.site or incident.event or "")
        now = time.monotonic()
        with self.lock:
            self.counts[incident.kind] += 1
            last = self.last_logged.get(log_key)
            log_it = last is None or now - last >= _LOG_INTERVAL
            if log_it:
                if len(self.last_logged) > 10_000:
                    self.last_logged.clear()
                self.last_logged[log_key] = now
                suppressed = self.suppressed.pop(log_key, 0)
            else:
                self.suppressed[log_key] += 1
        more = ""
        if log_it:
            more = f" ({suppressed} more since last logged)" if suppressed else ""
            try:
                _log.warning(
                    "instrumentor %s: %s%s",
                    incident.kind,
                    incident.message,
                    more,
                    # A traceback helps with bugs, not with bad input: those say what was wrong.
                    exc_info=incident.error if incident.kind in _TRACEBACK_KINDS else None,
                )
            except Exception:  # a raising log handler must not reach the caller
                with self.lock:
                    self.counts["log_error"] += 1
        if sampled:
            if not log_it:
                return
            if more:
                incident = dataclasses.replace(incident, message=incident.message + more)
        if hook is not None:
            try:
                hook(incident)
            except Exception as exc:  # the hook itself must not break the caller
                with self.lock:
                    self.counts["hook_error"] += 1
                    first = self.counts["hook_error"] == 1
                if first:
                    with contextlib.suppress(Exception):
                        _log.warning(
                            "instrumentor: the on_error hook raised %s; further hook errors "
                            "are only counted (stats()['hook_error'])",
                            type(exc).__qualname__,
                        )

    def count(self, kind: str, message: str) -> None:
        """Count something normal (no incident, no hook) and log it at debug level."""
        with self.lock:
            self.counts[kind] += 1
        with contextlib.suppress(Exception):
            _log.debug("instrumentor %s: %s", kind, message)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.last_logged.clear()
            self.suppressed.clear()


_diagnostics = _Diagnostics()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    _diagnostics.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def report_safely(incident: Incident, *, key: str | None = None, sampled: bool = False) -> None:
    """Report ``incident`` to the installed configuration; never raises (for request paths).

    Args:
        incident: What happened.
        key: Rate-limit key of the log line (and of the hook, if ``sampled``); the site by default.
        sampled: Call ``on_error`` only when the log line is written, once per minute per key.
    """
    from instrumentor.config import runtime

    with contextlib.suppress(Exception):
        runtime().report(incident, key, sampled=sampled)


def count_quietly(kind: str, message: str) -> None:
    """Count ``kind`` in :func:`stats` and log ``message`` at debug level: normal, no incident."""
    _diagnostics.count(kind, message)


def reset_stats() -> None:
    """Zero every counter of :func:`stats` and forget which sites were already logged."""
    _diagnostics.reset()


def stats() -> Mapping[str, int]:
    """Counters since start: incidents by kind, and delivery summed over the destinations.

    Incident kinds (``missing_group``, ``receiver_error``, ...) are counted since start or the
    last :func:`reset_stats`; kinds that never happened are absent. Delivery counters are summed
    over the destinations of this process: ``enqueued`` (events), ``delivered``, ``retried``
    and ``failed`` (messages), ``dropped.<reason>``, ``queue_depth`` (events waiting) and
    ``in_flight`` (messages being delivered). Per destination: ``Destination.stats()``.

    Returns:
        A snapshot such as ``{"missing_group": 3, "enqueued": 120, "delivered": 480}``.
    """
    counts = _diagnostics.snapshot()
    from instrumentor.delivery.destination import counters

    for key, value in counters().items():
        counts[key] = counts.get(key, 0) + value
    return counts
