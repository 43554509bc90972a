"""The dead letters: count them and send them back to the delivery queue (operator tools).

The delivery task (:mod:`~instrumentor.celery._task`) parks a batch on the dead-letter queue
after its last retry, or at once when the provider refused it; these functions talk to the
broker directly and raise its errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from instrumentor.celery._common import DEFAULT_DEAD_LETTER_QUEUE, DEFAULT_QUEUE, DEFAULT_TASK_NAME

__all__ = ["count_dead_letters", "replay_dead_letters"]

_log = logging.getLogger("instrumentor")


def _bound_queue(app: Any, connection: Any, name: str) -> Any:
    """``name`` as Celery declares it (same exchange and options), bound and declared."""
    bound = app.amqp.queues[name](connection.default_channel)
    bound.declare()
    return bound


def count_dead_letters(app: Any, *, dead_letter_queue: str = DEFAULT_DEAD_LETTER_QUEUE) -> int:
    """How many batches wait on the dead-letter queue (asks the broker; may raise its errors)."""
    with app.connection_for_write() as connection:
        bound = _bound_queue(app, connection, dead_letter_queue)
        return int(bound.queue_declare().message_count)


def replay_dead_letters(
    app: Any,
    *,
    queue: str = DEFAULT_QUEUE,
    dead_letter_queue: str = DEFAULT_DEAD_LETTER_QUEUE,
    task_name: str = DEFAULT_TASK_NAME,
    limit: int | None = None,
) -> int:
    """Send dead-lettered batches back to the delivery queue, as fresh tasks with new retries.

    Each batch is published to ``queue`` before it is removed from the dead-letter queue, so a
    crash in between duplicates a batch (same message ids) rather than losing it. Messages on
    the dead-letter queue that are not delivery tasks of ``task_name`` (or whose batch cannot
    be read) are held until the end and then left there, so they never block the others. An
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
    held: list[Any] = []
    with app.connection_for_write() as connection:
        bound = _bound_queue(app, connection, dead_letter_queue)
        waiting = int(bound.queue_declare().message_count)
        try:
            replayed = _replay(app, connection, bound, (waiting, limit), queue, task_name, held)
        finally:
            for message in held:
                message.requeue()  # not ours, or unreadable: left where it was
    if replayed:
        _log.info("instrumentor: replayed %d dead-lettered batch(es) to %r", replayed, queue)
    if held:
        _log.warning(
            "instrumentor: left %d message(s) on %r that are not readable delivery batches",
            len(held),
            dead_letter_queue,
        )
    return replayed


def _replay(
    app: Any,
    connection: Any,
    bound: Any,
    counts: tuple[int, int | None],
    queue: str,
    task_name: str,
    held: list[Any],
) -> int:
    """Publish dead letters to ``queue``, each before acknowledging it; return how many.

    ``counts`` is ``(waiting, limit)``: look at most at the ``waiting`` messages there were,
    and replay at most ``limit`` (``None``: all). Messages that are not delivery batches are
    kept unacknowledged in ``held``.
    """
    waiting, limit = counts
    replayed = 0
    for _ in range(waiting):
        if limit is not None and replayed >= limit:
            break
        message = bound.get(no_ack=False, accept=["json"])
        if message is None:
            break
        args = _delivery_args(message, task_name)
        if args is None:
            held.append(message)  # unacknowledged until the end: the next one comes
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
    return replayed


def _delivery_args(message: Any, task_name: str) -> tuple[str, list[Any]] | None:
    """``(route, messages)`` of a dead-lettered delivery task, or ``None`` if it is not one."""
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
