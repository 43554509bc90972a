"""The worker side of :class:`~instrumentor.delivery.celery.CeleryQueue`: the delivery task.

The task rebuilds a batch's messages (ids kept) and hands them to the transport of the same
kind that this process's configuration builds (Accoil, Segment, ...), synchronously. What the
provider did not accept is retried with ``task.retry`` (exponential backoff with full jitter,
or the provider's ``Retry-After``), only the messages not yet accepted. After the last retry, or
at once for messages the provider refused for good, the rest is *dead-lettered*: published, as
an ordinary delivery task, to a queue no worker consumes, and reported as a
``delivery_dead_lettered`` incident. :func:`replay_dead_letters` sends them back.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instrumentor import config as _config
from instrumentor.delivery.destination import Destination
from instrumentor.diagnostics import Incident
from instrumentor.exceptions import (
    TOO_LARGE,
    PartialDeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from instrumentor.messages import message_from_data, message_to_data
from instrumentor.otel import suppress_instrumentation

if TYPE_CHECKING:
    from instrumentor.config import Settings
    from instrumentor.delivery.celery import CeleryQueue
    from instrumentor.messages import Message
    from instrumentor.transports.base import Transport

__all__ = ["count_dead_letters", "register", "replay_dead_letters"]

_log = logging.getLogger("instrumentor")
#: (id(app), task name) -> the CeleryQueue whose options the task uses (the latest built).
_queues: dict[tuple[int, str], CeleryQueue] = {}


def register(queue: CeleryQueue) -> None:
    """Register the delivery task on ``queue.app`` (once per app and name; options: latest)."""
    key = (id(queue.app), queue.task_name)
    first = key not in _queues
    _queues[key] = queue
    if not first:
        return

    @queue.app.task(  # type: ignore[untyped-decorator]  # celery has no type hints
        name=queue.task_name,
        bind=True,
        acks_late=True,  # a worker that dies mid-delivery leaves the batch on the broker
        ignore_result=True,
        serializer="json",
        max_retries=None,  # the CeleryQueue's max_retries is applied per call
    )
    def deliver(
        task: Any, kind: str, messages: list[Any], dead_letter: Any = None
    ) -> dict[str, int]:
        return _run(_queues[key], task, kind, messages)

    del deliver  # registered on the app; reached by name


# --- which transport delivers --------------------------------------------------------------

_transports_lock = threading.Lock()
_transports: tuple[Settings | None, dict[str, Transport], list[Transport]] = (None, {}, [])


def _transport_for(kind: str) -> Transport | None:
    """This process's configured transport of class ``kind`` (built from its settings)."""
    global _transports
    settings = _config.current_settings()
    with _transports_lock:
        built_for, by_kind, owned = _transports
        if built_for is not settings:
            for old in owned:  # transports this module built for an older configuration
                with contextlib.suppress(Exception):
                    old.close()
            owned = []
            if settings.transports is not None:
                chosen = [
                    t.transport if isinstance(t, Destination) else t for t in settings.transports
                ]
            else:
                chosen = list(_config._default_transports(settings))
                owned = list(chosen)
            by_kind = {}
            for transport in chosen:
                by_kind.setdefault(type(transport).__name__, transport)
            _transports = (settings, by_kind, owned)
        return by_kind.get(kind)


# --- one delivery attempt ------------------------------------------------------------------


@dataclass
class _Outcome:
    delivered: int = 0
    retry: list[Message] = field(default_factory=list)
    refused: list[tuple[Message, str]] = field(default_factory=list)
    too_large: int = 0
    retry_after: float | None = None
    error: str | None = None

    def merge(self, other: _Outcome) -> None:
        self.delivered += other.delivered
        self.retry += other.retry
        self.refused += other.refused
        self.too_large += other.too_large
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, other.retry_after)
        self.error = other.error or self.error


def _attempt(transport: Transport, messages: list[Message]) -> _Outcome:
    """Deliver once; say what was accepted, what to retry, and what was refused for good."""
    try:
        with suppress_instrumentation():
            transport.deliver(messages)
    except PayloadTooLargeError as exc:
        if len(messages) == 1:
            return _Outcome(too_large=1, error=_text(exc))
        middle = len(messages) // 2
        outcome = _attempt(transport, messages[:middle])
        outcome.merge(_attempt(transport, messages[middle:]))
        return outcome
    except PartialDeliveryError as exc:
        refused = [(m, reason) for m, reason in exc.failed if f"({TOO_LARGE})" not in reason]
        return _Outcome(
            delivered=len(messages) - len(exc.retry) - len(exc.failed),
            retry=list(exc.retry),
            refused=refused,
            too_large=len(exc.failed) - len(refused),
            retry_after=exc.retry_after,
            error=_text(exc),
        )
    except RetryableDeliveryError as exc:
        return _Outcome(retry=list(messages), retry_after=exc.retry_after, error=_text(exc))
    except PermanentDeliveryError as exc:
        return _Outcome(refused=[(m, _text(exc)) for m in messages], error=_text(exc))
    except Exception as exc:  # a transport bug: retried like an outage, then dead-lettered
        return _Outcome(retry=list(messages), error=f"transport raised {_text(exc)}")
    return _Outcome(delivered=len(messages))


def _text(exc: BaseException) -> str:
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return type(exc).__name__


# --- the task body -------------------------------------------------------------------------


def _report(kind: str, message: str, site: str, key: str | None = None) -> None:
    _config.runtime().report(Incident(kind, message, site=site), key)


def _run(queue: CeleryQueue, task: Any, kind: str, payload: Any) -> dict[str, int]:
    site = f"celery:{kind}"
    request_id = str(getattr(task.request, "id", None) or "")
    try:
        if not isinstance(payload, list):
            raise ValueError("the batch must be a list of messages")
        messages = [message_from_data(item) for item in payload]
    except ValueError as exc:  # cannot be delivered as it is: kept, as sent, for a person
        _dead_letter(queue, task, kind, payload, f"malformed batch: {exc}", site)
        return {"delivered": 0, "dead_lettered": len(payload) if isinstance(payload, list) else 1}
    transport = _transport_for(kind)
    if transport is None:
        outcome = _Outcome(
            retry=messages,
            error=f"this worker has no {kind} configured; configure it as in the web process "
            "(e.g. ANALYTICS_API_KEY) and replay the dead letters",
        )
    else:
        outcome = _attempt(transport, messages)
    if outcome.too_large:
        _report(
            "delivery_dropped",
            f"{outcome.too_large} message(s) too large to send alone were dropped ({TOO_LARGE})",
            site,
        )
    dead = 0
    if outcome.refused:
        reasons = sorted({reason for _, reason in outcome.refused})
        _dead_letter(
            queue,
            task,
            kind,
            [message_to_data(m) for m, _ in outcome.refused],
            f"refused by the provider: {'; '.join(reasons)}",
            site,
        )
        dead += len(outcome.refused)
    if outcome.retry:
        retries = int(getattr(task.request, "retries", 0) or 0)
        remaining = [message_to_data(m) for m in outcome.retry]
        if retries < queue.max_retries:
            delay = queue.backoff.delay(retries + 1, outcome.retry_after)
            _report(
                "delivery_retrying",
                f"{len(remaining)} message(s) not delivered ({outcome.error}); Celery retry "
                f"{retries + 1} of {queue.max_retries} in {delay:.1f} s",
                site,
            )
            raise task.retry(
                args=(kind, remaining), kwargs={}, countdown=delay, max_retries=queue.max_retries
            )
        _dead_letter(
            queue,
            task,
            kind,
            remaining,
            f"gave up after {retries + 1} attempts: {outcome.error}",
            site,
            request_id,
        )
        dead += len(remaining)
    return {"delivered": outcome.delivered, "dead_lettered": dead, "dropped": outcome.too_large}


def _dead_letter(
    queue: CeleryQueue,
    task: Any,
    kind: str,
    payload: Any,
    reason: str,
    site: str,
    key: str | None = None,
) -> None:
    """Park ``payload`` on the dead-letter queue as a delivery task, and report it.

    If even that publish fails, the error propagates: the task fails and Celery logs it with
    the batch (the message ids stay in the worker's log).
    """
    count = len(payload) if isinstance(payload, list) else 1
    note = {"reason": reason, "at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    task.app.send_task(
        queue.task_name,
        args=(kind, payload),
        kwargs={"dead_letter": note},
        queue=queue.dead_letter_queue,
        serializer="json",
        ignore_result=True,
        add_to_parent=False,
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 1.0},
    )
    _report(
        "delivery_dead_lettered",
        f"{count} message(s) moved to the dead-letter queue {queue.dead_letter_queue!r} "
        f"({reason}); send them again with replay_dead_letters(app)",
        site,
        key=key or str(getattr(task.request, "id", "")),
    )


# --- dead letters --------------------------------------------------------------------------


def _bound_queue(app: Any, connection: Any, name: str) -> Any:
    """``name`` as Celery declares it (same exchange and options), bound and declared."""
    bound = app.amqp.queues[name](connection.default_channel)
    bound.declare()
    return bound


def count_dead_letters(app: Any, *, dead_letter_queue: str = "instrumentor.dead") -> int:
    """How many batches wait on the dead-letter queue (asks the broker; may raise its errors)."""
    with app.connection_for_write() as connection:
        bound = _bound_queue(app, connection, dead_letter_queue)
        return int(bound.queue_declare().message_count)


def replay_dead_letters(
    app: Any,
    *,
    queue: str = "instrumentor",
    dead_letter_queue: str = "instrumentor.dead",
    task_name: str = "instrumentor.deliver",
    limit: int | None = None,
) -> int:
    """Send dead-lettered batches back to the delivery queue, as fresh tasks with new retries.

    Each batch is published to ``queue`` before it is removed from the dead-letter queue, so a
    crash in between duplicates a batch (same message ids) rather than losing it. Messages on
    the dead-letter queue that are not delivery tasks of ``task_name`` are left there. An
    operator's tool: it talks to the broker and raises its errors.

    Args:
        app: The Celery application.
        queue: Where the batches go (the queue the workers consume).
        dead_letter_queue: Where they wait.
        task_name: The delivery task's name.
        limit: Replay at most this many batches (``None``: all there are now).

    Returns:
        The number of batches sent back.
    """
    replayed = 0
    with app.connection_for_write() as connection:
        bound = _bound_queue(app, connection, dead_letter_queue)
        to_replay = int(bound.queue_declare().message_count)
        if limit is not None:
            to_replay = min(to_replay, limit)
        for _ in range(to_replay):
            message = bound.get(no_ack=False, accept=["json"])
            if message is None:
                break
            args = _delivery_args(message, task_name)
            if args is None:
                message.requeue()  # not ours: left where it was
                continue
            app.send_task(
                task_name,
                args=args,
                queue=queue,
                serializer="json",
                ignore_result=True,
                add_to_parent=False,
                connection=connection,
            )
            message.ack()
            replayed += 1
    if replayed:
        _log.info("instrumentor: replayed %d dead-lettered batch(es) to %r", replayed, queue)
    return replayed


def _delivery_args(message: Any, task_name: str) -> tuple[str, list[Any]] | None:
    """``(kind, messages)`` of a dead-lettered delivery task, or ``None`` if it is not one."""
    headers: Mapping[str, Any] = message.headers or {}
    if headers.get("task") != task_name:
        return None
    try:
        body = message.decode()
    except Exception:
        return None
    if not (isinstance(body, Sequence) and body and isinstance(body[0], Sequence)):
        return None
    args = body[0]
    if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], list):
        return None
    return args[0], args[1]
