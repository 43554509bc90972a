"""The worker side of :class:`~instrumentor.celery.CeleryQueue`: the delivery task.

The task rebuilds a batch's messages (ids kept), resolves its route against this process's
configuration (see :func:`transport_for`) and delivers synchronously with one shared
:func:`~instrumentor.delivery._attempt.attempt`. What the provider did not accept is retried
with ``task.retry`` (exponential backoff with full jitter, or the provider's ``Retry-After``),
only the messages not yet accepted. After the last retry, or at once for messages the provider
refused for good, the rest is *dead-lettered*: published, as an ordinary delivery task with a
``dead_letter`` note, to a queue no worker consumes, and reported as a
``delivery_dead_lettered`` incident. :func:`replay_dead_letters` sends them back.

Nothing is acknowledged before it is settled: the task is ``acks_late``, a worker process that
dies mid-task has its batch redelivered (``reject_on_worker_lost``), a failing task is not
acknowledged (``acks_on_failure_or_timeout=False``), and any unexpected error ends in a retry
or, if even that cannot be published, in a requeue, with the message ids in a
``delivery_task_error`` incident.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, cast

from celery import signals
from celery.exceptions import Reject, Retry

from instrumentor import _wiring
from instrumentor._messages import message_from_data
from instrumentor._otel import suppress_instrumentation
from instrumentor._protocols import Receiver
from instrumentor.celery._common import (
    DEFAULT_ROUTE,
    TaskSettings,
    route_names,
    safe_error,
)
from instrumentor.celery._context import report
from instrumentor.delivery import Destination
from instrumentor.delivery._attempt import attempt, is_invalid
from instrumentor.exceptions import TOO_LARGE

if TYPE_CHECKING:
    from instrumentor._messages import Message
    from instrumentor._protocols import Transport
    from instrumentor._settings import Settings

__all__ = ["register", "transport_for"]

_log = logging.getLogger("instrumentor")
#: app -> task name -> the CeleryQueue whose options its task uses (the latest built).
_queues: weakref.WeakKeyDictionary[Any, dict[str, TaskSettings]] = weakref.WeakKeyDictionary()
#: The longest a worker waits before putting back a batch it could not even retry.
_MAX_REQUEUE_PAUSE = 5.0


def register(queue: TaskSettings) -> None:
    """Register the delivery task on ``queue.app`` (once per app and name; options: latest)."""
    by_name = _queues.setdefault(queue.app, {})
    first = queue.task_name not in by_name
    by_name[queue.task_name] = queue
    signals.worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="instrumentor")
    if not first:
        return

    @queue.app.task(  # type: ignore[untyped-decorator]  # celery has no type hints
        name=queue.task_name,
        bind=True,
        acks_late=True,  # acknowledged once settled: delivered, retried or dead-lettered
        reject_on_worker_lost=True,  # a killed worker process: redelivered (ids kept)
        acks_on_failure_or_timeout=False,  # never acknowledge a batch that was not settled
        ignore_result=True,
        serializer="json",
        max_retries=None,  # the CeleryQueue's max_retries is applied per call
    )
    def deliver(task: Any, route: str, messages: Any, dead_letter: Any = None) -> dict[str, int]:
        return _run_safely(_queues[task.app][task.name], task, route, messages, dead_letter)

    del deliver  # registered on the app; reached by name


# --- which transport delivers --------------------------------------------------------------

_transports_lock = threading.Lock()
_transports: tuple[Settings | None, dict[str, Transport], list[Transport]] = (None, {}, [])


def transport_for(route: str) -> Transport | None:
    """This process's transport for ``route``, from its own configuration.

    ``"default"`` is the first transport that does I/O (else the first at all); any other name
    is a channel name: the transport's class name, ``#2``, ``#3``... for repeats of a class.
    """
    global _transports
    settings = _wiring.current_settings()
    with _transports_lock:
        built_for, by_route, owned = _transports
        if built_for is not settings:
            for old in owned:  # transports this module built for an older configuration
                try:
                    old.close()
                except Exception as exc:
                    _log.debug("instrumentor: closing an old transport failed: %s", exc)
            owned = []
            if settings.transports is not None:
                given = list(settings.transports)
                if settings.debug:  # print, never send: a worker holds them back too
                    kept = _wiring.receiving_in_debug(given)
                    owned = [t for t in kept if not any(t is g for g in given)]
                    given = kept
                chosen = [_transport_of(t) for t in given]
            else:
                chosen = list(_wiring.default_transports(settings))
                owned = list(chosen)
            by_route = dict(zip(route_names(chosen), chosen, strict=True))
            doing_io = [t for t in chosen if not getattr(t, "inline", False)] or chosen
            if doing_io:
                by_route[DEFAULT_ROUTE] = doing_io[0]
            _transports = (settings, by_route, owned)
        if settings.debug:  # print, never send: every route prints
            return by_route.get(DEFAULT_ROUTE)
        return by_route.get(route)


def _transport_of(given: Transport | Receiver) -> Transport:
    """The transport a configured entry delivers with (a ``Destination``'s own transport)."""
    if isinstance(given, Destination):
        return given.transport
    return cast("Transport", given)


# --- the task body -------------------------------------------------------------------------


class _Batch:
    """What of the task's batch is not settled yet, as sent (for a retry after an error)."""

    def __init__(self, payload: Any) -> None:
        self.pending: Any = payload

    def ids(self) -> list[str]:
        items = self.pending if isinstance(self.pending, list) else []
        return [str(item.get("message_id")) for item in items if isinstance(item, Mapping)]


def _run_safely(
    queue: TaskSettings, task: Any, route: str, payload: Any, dead_letter: Any
) -> dict[str, int]:
    """Run the task; whatever goes wrong, the batch ends retried or back on the broker."""
    batch = _Batch(payload)
    try:
        if dead_letter is not None:
            return _put_back(queue, task, route, payload, dead_letter)
        return _run(queue, task, route, batch)
    except Retry:
        raise
    except Reject as exc:
        if exc.requeue:
            raise
        error: BaseException = exc.reason if isinstance(exc.reason, BaseException) else exc
    except Exception as exc:
        error = exc
    return _recover(queue, task, route, batch, error, dead_letter)


def _recover(
    queue: TaskSettings,
    task: Any,
    route: str,
    batch: _Batch,
    error: BaseException,
    dead_letter: Any,
) -> NoReturn:
    """Retry the unsettled rest after ``error``; if that cannot be published, requeue."""
    retries = int(getattr(task.request, "retries", 0) or 0)
    delay = queue.backoff.delay(retries + 1)
    text = safe_error(error, task.app)
    ids = ", ".join(batch.ids()) or "none readable"
    report(
        "delivery_task_error",
        f"the delivery task failed ({text}); its unsettled message(s) [{ids}] are retried in "
        f"{delay:.1f} s",
        site=f"celery:{route}",
        key=str(getattr(task.request, "id", "")),
    )
    try:
        retry = task.retry(
            args=(route, batch.pending),
            kwargs={} if dead_letter is None else {"dead_letter": dead_letter},
            countdown=delay,
            max_retries=None,
        )
    except Retry as sent:
        raise sent from None
    except Exception as exc:  # task.retry could not publish: put the message back instead
        report(
            "delivery_task_error",
            f"could not publish the retry ({safe_error(exc, task.app)}); the batch [{ids}] "
            "goes back on the queue",
            site=f"celery:{route}",
        )
        time.sleep(min(delay, _MAX_REQUEUE_PAUSE))  # no hot loop while the broker is failing
        raise Reject(text, requeue=True) from None
    raise retry


def _run(queue: TaskSettings, task: Any, route: str, batch: _Batch) -> dict[str, int]:
    payload = batch.pending
    try:
        if not isinstance(payload, list):
            raise ValueError("the batch must be a list of messages")
        messages = [message_from_data(item) for item in payload]
    except ValueError as exc:  # cannot be delivered as it is: kept, as sent, for a person
        _dead_letter(queue, task, route, payload, f"malformed batch: {exc}")
        return {"delivered": 0, "dead_lettered": len(payload) if isinstance(payload, list) else 1}
    done = _attempt_payload(route, messages, payload)
    batch.pending = [data for data, _ in done.refused] + done.retry
    if done.too_large:
        report(
            "delivery_dropped",
            f"{done.too_large} message(s) too large to send alone were dropped ({TOO_LARGE})",
            site=f"celery:{route}",
        )
    if done.invalid:  # they fail whenever they are sent: dropped, not dead-lettered
        report(
            "invalid_message",
            f"{len(done.invalid)} message(s) that cannot be encoded were dropped: "
            f"{'; '.join(sorted(set(done.invalid)))}",
            site=f"celery:{route}",
        )
    if done.refused:
        reasons = sorted({reason for _, reason in done.refused})
        _dead_letter(
            queue,
            task,
            route,
            [data for data, _ in done.refused],
            f"refused by the provider: {'; '.join(reasons)}",
        )
        batch.pending = done.retry
    dead = len(done.refused)
    if done.retry:
        dead += _retry_or_park(queue, task, route, done)
    dropped = done.too_large + len(done.invalid)
    return {"delivered": done.delivered, "dead_lettered": dead, "dropped": dropped}


@dataclass
class _Attempted:
    """One attempt's outcome, as items of the payload as sent."""

    retry: list[Any]
    error: str
    refused: list[tuple[Any, str]] = field(default_factory=list)
    delivered: int = 0
    too_large: int = 0
    invalid: list[str] = field(default_factory=list)  # the reasons, one per message
    retry_after: float | None = None


def _attempt_payload(route: str, messages: list[Message], payload: list[Any]) -> _Attempted:
    """Deliver ``messages`` (read from ``payload``) once through the route's transport."""
    transport = transport_for(route)
    if transport is None:
        return _Attempted(
            list(payload),
            f"this worker has no transport for route {route!r}; configure it as the web "
            "process expects (e.g. ANALYTICS_API_KEY, or the same transports in the same "
            "order) and replay the dead letters",
        )
    with suppress_instrumentation():
        outcome = attempt(transport, messages)
    # The outcome lists the very message objects passed in: map them back to what was sent.
    position = {id(message): i for i, message in enumerate(messages)}
    return _Attempted(
        retry=[payload[position[id(m)]] for m in outcome.retry],
        error=outcome.error or "",
        refused=[
            (payload[position[id(m)]], reason)
            for m, reason in outcome.failed
            if not is_invalid(reason)
        ],
        delivered=len(outcome.delivered),
        too_large=len(outcome.too_large),
        invalid=[reason for _, reason in outcome.failed if is_invalid(reason)],
        retry_after=outcome.retry_after,
    )


def _retry_or_park(queue: TaskSettings, task: Any, route: str, done: _Attempted) -> int:
    """Retry what is left with Celery's countdown; after the last retry, dead-letter it.

    Returns:
        How many messages were dead-lettered (a retry raises instead).
    """
    retries = int(getattr(task.request, "retries", 0) or 0)
    remaining = done.retry
    if retries < queue.max_retries:
        delay = queue.backoff.delay(retries + 1, done.retry_after)
        report(
            "delivery_retrying",
            f"{len(remaining)} message(s) not delivered ({done.error}); Celery retry "
            f"{retries + 1} of {queue.max_retries} in {delay:.1f} s",
            site=f"celery:{route}",
        )
        raise task.retry(args=(route, remaining), kwargs={}, countdown=delay, max_retries=None)
    _dead_letter(
        queue, task, route, remaining, f"gave up after {retries + 1} attempts: {done.error}"
    )
    return len(remaining)


def _dead_letter(queue: TaskSettings, task: Any, route: str, payload: Any, reason: str) -> None:
    """Park ``payload`` on the dead-letter queue as a delivery task, and report it.

    If even that publish fails, the error propagates to :func:`_run_safely`, which retries.
    """
    note = {"reason": reason, "at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    _publish_dead_letter(queue, task.app, route, payload, note)
    count = len(payload) if isinstance(payload, list) else 1
    report(
        "delivery_dead_lettered",
        f"{count} message(s) moved to the dead-letter queue {queue.dead_letter_queue!r} "
        f"({reason}); send them again with replay_dead_letters(app)",
        site=f"celery:{route}",
        key=str(getattr(task.request, "id", "")),
    )


def _publish_dead_letter(
    queue: TaskSettings, app: Any, route: str, payload: Any, note: Any, countdown: float = 0
) -> None:
    app.send_task(
        queue.task_name,
        args=(route, payload),
        kwargs={"dead_letter": note},
        queue=queue.dead_letter_queue,
        serializer="json",
        ignore_result=True,
        add_to_parent=False,
        countdown=countdown or None,
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 1.0},
    )


def _put_back(
    queue: TaskSettings, task: Any, route: str, payload: Any, note: Any
) -> dict[str, int]:
    """A dead letter that a worker consumed: never delivered here (that loops), parked again.

    It goes back to the dead-letter queue unchanged, not before ``max_delay`` seconds, so a
    worker that consumes that queue anyway cannot spin on it.
    """
    _publish_dead_letter(queue, task.app, route, payload, note, queue.backoff.max_delay)
    report(
        "dead_letter_consumed",
        f"a worker ran a dead letter from {queue.dead_letter_queue!r}; dead letters are only "
        "sent again by replay_dead_letters(app), so it was parked again. Do not consume "
        f"{queue.dead_letter_queue!r} with a worker",
        site=f"celery:{route}",
    )
    return {"delivered": 0, "dead_lettered": 0}


# --- checks when a worker starts -----------------------------------------------------------


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Warn about a worker set up so that batches would wait, loop or be unsafe."""
    try:
        app = sender.app
        consumed = {str(name) for name in app.amqp.queues.consume_from}
        for queue in list(_queues.get(app, {}).values()):
            if queue.dead_letter_queue in consumed:
                sender.cancel_task_queue(queue.dead_letter_queue)
                _log.warning(
                    "instrumentor: this worker stopped consuming the dead-letter queue %r: "
                    "dead letters are sent again with replay_dead_letters(app), not by a worker",
                    queue.dead_letter_queue,
                )
            if queue.queue not in consumed:
                _log.warning(
                    "instrumentor: this worker does not consume the delivery queue %r; batches "
                    "wait there until a worker does (add it to -Q)",
                    queue.queue,
                )
            elif transport_for(DEFAULT_ROUTE) is None:
                _log.warning(
                    "instrumentor: this worker consumes %r but has no transport to deliver "
                    "through; set ANALYTICS_API_KEY (or configure transports) for the worker",
                    queue.queue,
                )
        if "pickle" in set(app.conf.accept_content or ()):
            _log.warning(
                "instrumentor: accept_content includes pickle: anyone who can publish to the "
                "broker can run code in this worker; instrumentor's tasks need only json"
            )
    except Exception as exc:  # a check must not stop a worker from starting
        _log.warning("instrumentor: could not check the worker's setup: %s", exc)
