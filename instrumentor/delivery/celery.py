"""The Celery queue backend: web processes publish batches, Celery workers deliver them.

``configure(queue=CeleryQueue(app))`` changes what each default destination's worker thread
does with a batch: instead of calling the provider it publishes one Celery task carrying the
messages (JSON), and returns. A broker that is down is an ordinary retryable delivery error for
the :class:`~instrumentor.delivery.Destination`: retried with backoff while the bounded queue
holds new events, which are dropped and counted when it is full. The caller still only appends
to a deque.

The task (registered on ``app`` by :class:`CeleryQueue`, so the worker must build one too)
rebuilds the messages with their ids and delivers them through the transport the *worker's*
configuration builds, with Celery's retries; what is still not accepted after the last retry is
parked on a dead-letter queue that no worker consumes, and reported. See ``docs/celery.md``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from instrumentor.delivery.destination import Destination
from instrumentor.delivery.retry import RetryPolicy
from instrumentor.exceptions import ConfigurationError, RetryableDeliveryError
from instrumentor.messages import message_to_data

if TYPE_CHECKING:
    from instrumentor.messages import Message
    from instrumentor.transports.base import Transport

__all__ = ["CeleryPublisher", "CeleryQueue"]

#: How patiently a web process publishes while the broker is down: a batch is given up (counted
#: in ``failed``) after an hour; meanwhile the bounded queue keeps new events.
PUBLISH_RETRY = RetryPolicy(
    max_attempts=1_000_000, max_elapsed=3600.0, base_delay=0.5, max_delay=30.0
)


class CeleryQueue:
    """Queue backend for ``configure(queue=...)``: batches become Celery tasks.

    Build it in the module that creates the Celery app, so that web processes (which publish)
    and workers (which deliver) both have it: the constructor registers the delivery task on
    ``app``, and by default turns on context propagation
    (:func:`instrumentor.integrations.celery.propagate_context`).

    Args:
        app: The Celery application.
        queue: The queue the delivery tasks are sent to; run a worker on it
            (``celery -A proj worker -Q instrumentor``, or add it to the worker's ``-Q``).
        task_name: The name the delivery task is registered under.
        dead_letter_queue: Where batches go after the last retry; no worker consumes it unless
            you ask for it, so the broker keeps them until :func:`replay_dead_letters`.
        max_retries: Celery retries of a batch the provider did not accept, before it is
            dead-lettered.
        base_delay: The first retry's backoff ceiling in seconds (full jitter, doubling).
        max_delay: The longest backoff in seconds. A provider's ``Retry-After`` replaces the
            backoff (clamped to five minutes).
        batch_size: Messages per published task at most.
        linger: Seconds a web process waits for a batch to fill before publishing it.
        publish_retry: How the web process retries publishing while the broker is down
            (default: backoff up to 30 s, a batch given up after an hour).
        publish_timeout: Seconds a connection attempt or socket operation on the broker may
            take, so that a broker that stops answering cannot hang the publishing thread.
        propagate_context: Carry the analytics context into every task published from a bound
            context, and bind it in the worker while the task runs.
    """

    def __init__(
        self,
        app: Any,
        *,
        queue: str = "instrumentor",
        task_name: str = "instrumentor.deliver",
        dead_letter_queue: str = "instrumentor.dead",
        max_retries: int = 10,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        batch_size: int = 100,
        linger: float = 0.2,
        publish_retry: RetryPolicy | None = None,
        publish_timeout: float = 5.0,
        propagate_context: bool = True,
    ) -> None:
        if not callable(getattr(app, "send_task", None)):
            raise ConfigurationError(f"CeleryQueue needs a Celery app, got {type(app).__name__}")
        if not (queue and task_name and dead_letter_queue) or queue == dead_letter_queue:
            raise ConfigurationError(
                "queue, task_name and dead_letter_queue must be non-empty, and the dead-letter "
                "queue must differ from the delivery queue"
            )
        if max_retries < 0 or publish_timeout <= 0:
            raise ConfigurationError("max_retries must be >= 0 and publish_timeout > 0")
        self.app = app
        self.queue = queue
        self.task_name = task_name
        self.dead_letter_queue = dead_letter_queue
        self.max_retries = max_retries
        #: The backoff of the worker's retries (its ``max_attempts`` is not used).
        self.backoff = RetryPolicy(base_delay=base_delay, max_delay=max_delay)
        self.batch_size = batch_size
        self.linger = linger
        self.publish_retry = publish_retry or PUBLISH_RETRY
        self.publish_timeout = publish_timeout
        from instrumentor.delivery.celery_task import register

        register(self)
        if propagate_context:
            from instrumentor.integrations.celery import propagate_context as propagate

            propagate(app)

    def destination(self, transport: Transport, *, max_queue: int) -> Destination:
        """A destination whose worker publishes ``transport``'s batches as Celery tasks."""
        publisher = CeleryPublisher(self, transport)
        return Destination(
            publisher,
            name=f"celery-{publisher.kind}",
            max_queue=max_queue,
            batch_size=self.batch_size,
            linger=self.linger,
            retry=self.publish_retry,
        )

    def replay_dead_letters(self, limit: int | None = None) -> int:
        """Send dead-lettered batches back to :attr:`queue`; see :func:`replay_dead_letters`."""
        from instrumentor.delivery.celery_task import replay_dead_letters

        return replay_dead_letters(
            self.app,
            queue=self.queue,
            dead_letter_queue=self.dead_letter_queue,
            task_name=self.task_name,
            limit=limit,
        )

    def __repr__(self) -> str:  # no broker URL: it may hold a password
        return f"CeleryQueue(queue={self.queue!r}, dead_letter_queue={self.dead_letter_queue!r})"


class CeleryPublisher:
    """A transport that publishes each batch as one delivery task (used by :class:`CeleryQueue`).

    It owns one broker connection, used only by its destination's worker thread, with timeouts
    on connecting and on every socket operation. Any failure to publish raises
    :class:`~instrumentor.RetryableDeliveryError` (the broker URL and its password are left out).

    Args:
        queue: The :class:`CeleryQueue` it publishes for.
        transport: The transport the settings chose; its class name tells the worker which of
            its transports delivers the batch. It is never called here, only closed.
    """

    def __init__(self, queue: CeleryQueue, transport: Transport) -> None:
        self.celery_queue = queue
        self.transport = transport
        #: The transport's class name, sent with each batch.
        self.kind = type(transport).__name__
        self._connection: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def deliver(self, batch: Sequence[Message]) -> None:
        """Publish ``batch`` as one task; raise ``RetryableDeliveryError`` if the broker failed."""
        payload = [message_to_data(message) for message in batch]
        queue = self.celery_queue
        with self._lock:
            try:
                queue.app.send_task(
                    queue.task_name,
                    args=(self.kind, payload),
                    queue=queue.queue,
                    serializer="json",
                    connection=self._connect(),
                    ignore_result=True,
                    add_to_parent=False,
                    # One quick reconnect (a broker restart leaves a stale socket); longer
                    # outages are the destination's backoff, which never blocks the caller.
                    retry=True,
                    retry_policy={
                        "max_retries": 1,
                        "interval_start": 0,
                        "interval_step": 0.2,
                        "interval_max": 0.2,
                    },
                )
            except Exception as exc:
                self._discard_connection()
                raise RetryableDeliveryError(
                    f"could not publish to the Celery broker: {_safe_error(exc, self._secrets())}"
                ) from None

    def _connect(self) -> Any:
        if self._pid != os.getpid():  # a forked child must not share the parent's socket
            self._connection, self._pid = None, os.getpid()
        if self._connection is None:
            timeout = self.celery_queue.publish_timeout
            connection = self.celery_queue.app.connection_for_write(connect_timeout=timeout)
            if connection.transport.driver_type == "redis":
                options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
            elif connection.transport.driver_type == "amqp":
                options = {"read_timeout": timeout, "write_timeout": timeout}
            else:
                options = {}
            connection.transport_options = {**options, **(connection.transport_options or {})}
            self._connection = connection
        return self._connection

    def _secrets(self) -> list[str]:
        with contextlib.suppress(Exception):
            password = self.celery_queue.app.connection_for_write().password
            if password:
                return [str(password)]
        return []

    def _discard_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                connection.release()

    def close(self) -> None:
        """Release the broker connection and close the wrapped transport."""
        with self._lock:
            self._discard_connection()
        with contextlib.suppress(Exception):
            self.transport.close()

    def __repr__(self) -> str:
        return f"CeleryPublisher({self.kind}, queue={self.celery_queue.queue!r})"


def _safe_error(exc: BaseException, secrets: Sequence[str]) -> str:
    """``Type: text`` of an error, with any secret replaced."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "********")
    return text
