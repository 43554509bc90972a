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
import enum
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Incident", "IncidentKind", "count_quietly", "report_to", "reset_stats", "snapshot"]

_log = logging.getLogger("instrumentor")
_LOG_INTERVAL = 60.0
_TRACEBACK_KINDS = frozenset({"internal_error", "receiver_error"})


class IncidentKind(str, enum.Enum):
    """Every kind of run-time incident, and every quiet count, that :func:`stats` can show.

    A ``str`` enum: ``incident.kind == "missing_group"`` and ``stats()["missing_group"]`` work
    with the plain value, as do sets and dictionaries keyed by it.
    """

    #: No user id bound for a track (the event is dropped).
    MISSING_USER = "missing_user"
    #: No group id bound at the event's level (the event is sent without a group).
    MISSING_GROUP = "missing_group"
    #: ``bind_context()`` ignored input it cannot use.
    INVALID_CONTEXT = "invalid_context"
    #: ``track()`` was given something that is not a plan member.
    INVALID_EVENT = "invalid_event"
    #: ``group()`` was given a level the hierarchy does not declare.
    INVALID_GROUP_LEVEL = "invalid_group_level"
    #: Properties that are not a mapping (or cannot be read), or a ``properties=`` callable
    #: that raised.
    INVALID_PROPERTIES = "invalid_properties"
    #: A ``group_id=`` callable of ``@tracks`` raised.
    INVALID_GROUP_ID = "invalid_group_id"
    #: A deprecated event was tracked (logged once per event and interval).
    DEPRECATED_EVENT = "deprecated_event"
    #: A bug inside instrumentor; the caller was not affected.
    INTERNAL_ERROR = "internal_error"
    #: A receiver of the emission signal raised; the others still ran.
    RECEIVER_ERROR = "receiver_error"
    #: An ``ANALYTICS_*`` variable could not be read at first use (tracking is off).
    BAD_CONFIGURATION = "bad_configuration"
    #: A destination dropped events (queue full, shut down) or messages (too large).
    DELIVERY_DROPPED = "delivery_dropped"
    #: A destination gave messages up (refused for good, or retries exhausted).
    DELIVERY_FAILED = "delivery_failed"
    #: A delivery attempt failed and will be retried.
    DELIVERY_RETRYING = "delivery_retrying"
    #: A message that cannot be encoded (e.g. as JSON) was dropped alone; the rest went out.
    INVALID_MESSAGE = "invalid_message"
    #: The SQLite outbox cannot be used; events are queued in memory.
    OUTBOX_UNAVAILABLE = "outbox_unavailable"
    #: A read or write of the outbox failed (a full disk, a replaced file).
    OUTBOX_ERROR = "outbox_error"
    #: The outbox holds rows of channels no destination of this process serves.
    OUTBOX_UNSERVED = "outbox_unserved"
    #: A Celery delivery task got a payload or route it cannot use.
    DELIVERY_TASK_ERROR = "delivery_task_error"
    #: A Celery batch was parked on the dead-letter queue after its last retry.
    DELIVERY_DEAD_LETTERED = "delivery_dead_lettered"
    #: A worker consumed the dead-letter queue (it should not: it is for replays).
    DEAD_LETTER_CONSUMED = "dead_letter_consumed"
    #: A request's identity resolver raised or returned something unusable (sampled).
    IDENTITY_ERROR = "identity_error"
    #: The frontend endpoint rejected a request (sampled).
    FRONTEND_REJECTED = "frontend_rejected"
    #: A hook of the frontend endpoint raised (sampled).
    FRONTEND_HOOK_ERROR = "frontend_hook_error"
    #: Counted only: an ``on_error`` hook raised.
    HOOK_ERROR = "hook_error"
    #: Counted only: a log handler raised.
    LOG_ERROR = "log_error"
    #: Counted only, not an incident: a request without an identity.
    IDENTITY_MISSING = "identity_missing"
    #: Counted only, not an incident: a client went away mid-body.
    FRONTEND_DISCONNECTED = "frontend_disconnected"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)  # reads like the plain string it equals (in Incident reprs too)

    def __hash__(self) -> int:
        return str.__hash__(self.value)  # equal to the plain string's, so look-ups by it work


_KINDS = frozenset(kind.value for kind in IncidentKind)


@dataclass(frozen=True)
class Incident:
    """One run-time problem, as passed to the ``on_error`` hook.

    Attributes:
        kind: What happened: an :class:`IncidentKind` (a string of one of its values is turned
            into the member); any other string is kept as given (kinds of your own code).
        message: A sentence saying what happened and what to do.
        event: The event name concerned, if any.
        site: Where it happened (the decorated function, or the event for imperative calls).
        error: The exception behind it, if any.
    """

    kind: IncidentKind | str
    message: str
    event: str | None = None
    site: str | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        # instrumentor's own kinds become IncidentKind members; a kind of the application's
        # (a custom queue strategy's, say) stays the string it was given.
        if self.kind in _KINDS:
            object.__setattr__(self, "kind", IncidentKind(self.kind))


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
        kind = str(incident.kind)  # the plain value: counters and log lines show it
        log_key = (kind, key or incident.site or incident.event or "")
        now = time.monotonic()
        with self.lock:
            self.counts[kind] += 1
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
                    kind,
                    incident.message,
                    more,
                    # A traceback helps with bugs, not with bad input: those say what was wrong.
                    exc_info=incident.error if kind in _TRACEBACK_KINDS else None,
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
        kind = str(kind)
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


def report_to(
    incident: Incident,
    hook: Callable[[Incident], None] | None,
    key: str | None = None,
    *,
    sampled: bool = False,
) -> None:
    """Count, log (rate-limited) and hand ``incident`` to ``hook``; never raises.

    Args:
        incident: What happened.
        hook: The ``on_error`` hook of the configuration in force, if any.
        key: Rate-limit key of the log line (and of the hook, if ``sampled``); the site by default.
        sampled: Call ``hook`` only when the log line is written, once per minute per key.
    """
    with contextlib.suppress(Exception):
        _diagnostics.report(incident, hook, key, sampled=sampled)


def count_quietly(kind: str, message: str) -> None:
    """Count ``kind`` in :func:`stats` and log ``message`` at debug level: normal, no incident."""
    _diagnostics.count(kind, message)


def reset_stats() -> None:
    """Zero every counter of :func:`stats` and forget which sites were already logged."""
    _diagnostics.reset()


def snapshot() -> dict[str, int]:
    """The incident counters since start or the last :func:`reset_stats`."""
    return _diagnostics.snapshot()
