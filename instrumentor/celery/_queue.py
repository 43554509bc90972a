"""The Celery queue backend: web processes publish batches, Celery workers deliver them.

``configure(queue=CeleryQueue(app))`` replaces the destinations that would call a provider with
one destination per *route*, whose worker thread publishes each batch as one Celery task (JSON)
and returns. A route is a name, not a transport: ``"default"`` (the worker's first transport),
or the channel name of one of the worker's transports (its class name, ``#2`` for the second of
a class). Each worker resolves the route against its own configuration, which holds the API
key, so web processes need no secret. A broker that is down is an ordinary retryable delivery
error for the :class:`~instrumentor.delivery.Destination`: retried with backoff while the
bounded queue holds new events, which are dropped and counted when it is full. The caller
still only appends to a deque.

The task (registered on ``app`` by :class:`CeleryQueue`, so the worker must build one too) is in
:mod:`instrumentor.celery._task`. See ``docs/celery.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from instrumentor._messages import message_to_data
from instrumentor.celery._common import (
    DEFAULT_DEAD_LETTER_QUEUE,
    DEFAULT_QUEUE,
    DEFAULT_ROUTE,
    DEFAULT_TASK_NAME,
    route_names,
    safe_error,
)
from instrumentor.celery._context import propagate_context as propagate
from instrumentor.celery._dead_letters import replay_dead_letters
from instrumentor.celery._task import register
from instrumentor.delivery import Destination, MemoryStrategy, RetryPolicy
from instrumentor.delivery._attempt import describe
from instrumentor.exceptions import (
    INVALID_MESSAGE,
    MAX_RETRY_AFTER,
    ConfigurationError,
    PartialDeliveryError,
    RetryableDeliveryError,
)

if TYPE_CHECKING:
    from instrumentor._messages import Message
    from instrumentor._settings import Settings

__all__ = ["PUBLISH_RETRY", "CeleryPublisher", "CeleryQueue"]

#: A message and its task form (:func:`~instrumentor._messages.message_to_data`).
Item = tuple["Message", dict[str, Any]]

#: Redis redelivers a task not acknowledged within this many seconds (Celery's default).
REDIS_VISIBILITY_TIMEOUT = 3600.0

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
    (:func:`instrumentor.celery._context.propagate_context`).

    Args:
        app: The Celery application.
        queue: The queue the delivery tasks are sent to; run a worker on it
            (``celery -A proj worker -Q instrumentor``, or add it to the worker's ``-Q``).
        task_name: The name the delivery task is registered under.
        dead_letter_queue: Where batches go after the last retry. No worker may consume it
            (a worker that tries stops consuming it); :func:`replay_dead_letters` sends them
            back.
        routes: The route names web processes publish, one task per batch and route. ``None``
            (the default): ``"default"`` when ``configure()`` names no transports, else the
            channel name of each transport that does I/O (``"AccoilTransport"``,
            ``"AccoilTransport#2"``, ...). Workers resolve each name against their own
            configuration.
        max_retries: Celery retries of a batch the provider did not accept, before it is
            dead-lettered.
        base_delay: The first retry's backoff ceiling in seconds (full jitter, doubling).
        max_delay: The longest backoff in seconds. A provider's ``Retry-After`` replaces the
            backoff (clamped to five minutes). On Redis, both must stay below the transport's
            ``visibility_timeout`` (an hour by default), or a waiting retry is delivered twice.
        batch_size: Messages per published task at most.
        linger: Seconds a web process waits for a batch to fill before publishing it.
        publish_retry: How the web process retries publishing while the broker is down
            (default: backoff up to 30 s, a batch given up after an hour).
        publish_timeout: Seconds a connection attempt or socket operation on the broker may
            take, so that a broker that stops answering cannot hang the publishing thread
            (name resolution is not bounded by it: use an IP address or a local resolver).
        propagate_context: Carry the analytics context into every task published from a bound
            context, and bind it in the worker while the task runs.
        propagate_traits: Also carry user and group traits and names in task headers (they may
            be personal data); by default only the ids travel.

    Raises:
        ConfigurationError: If an option is invalid, or if on Redis the longest retry delay
            is not below the ``visibility_timeout``.
    """

    def __init__(
        self,
        app: Any,
        *,
        queue: str = DEFAULT_QUEUE,
        task_name: str = DEFAULT_TASK_NAME,
        dead_letter_queue: str = DEFAULT_DEAD_LETTER_QUEUE,
        routes: Sequence[str] | None = None,
        max_retries: int = 10,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        batch_size: int = 100,
        linger: float = 0.2,
        publish_retry: RetryPolicy | None = None,
        publish_timeout: float = 5.0,
        propagate_context: bool = True,
        propagate_traits: bool = False,
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
        if routes is not None:
            routes = tuple(routes)
            if not routes or not all(isinstance(r, str) and r for r in routes):
                raise ConfigurationError(
                    f"routes must be non-empty route names (e.g. ('default',)), got {routes!r}"
                )
            if len(set(routes)) != len(routes):
                raise ConfigurationError(f"routes must not repeat a name, got {routes!r}")
        self.app = app
        self.queue = queue
        self.task_name = task_name
        self.dead_letter_queue = dead_letter_queue
        self.routes: tuple[str, ...] | None = routes
        self.max_retries = max_retries
        #: The backoff of the worker's retries (its ``max_attempts`` is not used).
        self.backoff = RetryPolicy(base_delay=base_delay, max_delay=max_delay)
        self.batch_size = batch_size
        self.linger = linger
        self.publish_retry = publish_retry or PUBLISH_RETRY
        self.publish_timeout = publish_timeout
        _check_visibility_timeout(app, max_delay)
        register(self)
        if propagate_context:
            propagate(app, traits=propagate_traits)

    def routes_for(self, settings: Settings) -> tuple[str, ...]:
        """The routes a process with ``settings`` publishes (see ``routes``)."""
        if self.routes is not None:
            return self.routes
        if settings.transports is None:
            return (DEFAULT_ROUTE,)
        transports = settings.transports
        return tuple(
            name
            for transport, name in zip(transports, route_names(transports), strict=True)
            if not isinstance(transport, Destination) and not getattr(transport, "inline", False)
        )

    def destinations(self, settings: Settings) -> list[Destination]:
        """One publishing destination per route; none in debug mode (it prints instead).

        Each is a :class:`~instrumentor.delivery.Destination` with the memory strategy whose
        transport is a :class:`CeleryPublisher`: the broker is the durable queue, and a broker
        that is down is an ordinary retryable delivery error.

        Raises:
            ConfigurationError: If nothing would be published (every transport given is inline
                or a ``Destination`` of yours), or if the app runs tasks eagerly.
        """
        if settings.debug:
            return []
        if getattr(self.app.conf, "task_always_eager", False):
            raise ConfigurationError(
                "the Celery app has task_always_eager set, which publishing ignores; in tests, "
                "configure without a queue (capture_events(), MemoryTransport), or turn "
                "task_always_eager off and run a worker"
            )
        routes = self.routes_for(settings)
        if not routes:
            raise ConfigurationError(
                "queue is set but nothing would be published: every transport given is inline "
                "or a Destination of yours. Leave transports unset (publishes the 'default' "
                "route), add the transport the workers deliver through, or pass "
                "CeleryQueue(app, routes=(...))"
            )
        return [
            Destination(
                CeleryPublisher(self, route),
                name=f"celery-{route}",
                max_queue=int(settings.queue_size),
                batch_size=self.batch_size,
                linger=self.linger,
                retry=self.publish_retry,
                strategy=MemoryStrategy(),
            )
            for route in routes
        ]

    def replay_dead_letters(self, limit: int | None = None) -> int:
        """Send dead-lettered batches back to :attr:`queue`; see :func:`replay_dead_letters`."""
        return replay_dead_letters(
            self.app,
            queue=self.queue,
            dead_letter_queue=self.dead_letter_queue,
            task_name=self.task_name,
            limit=limit,
        )

    def __repr__(self) -> str:  # no broker URL: it may hold a password
        return f"CeleryQueue(queue={self.queue!r}, dead_letter_queue={self.dead_letter_queue!r})"


_publishers: weakref.WeakSet[CeleryPublisher] = weakref.WeakSet()


class CeleryPublisher:
    """A transport that publishes each batch as one delivery task (used by :class:`CeleryQueue`).

    It owns one broker connection, used only by its destination's worker thread, with timeouts
    on connecting and on every socket operation, and publisher confirms on RabbitMQ (a batch
    counts as published once the broker has taken it). Any failure to publish raises
    :class:`~instrumentor.exceptions.RetryableDeliveryError` (the broker URLs' passwords are
    left out).
    A forked child gets a fresh lock and connection.

    Args:
        queue: The :class:`CeleryQueue` it publishes for.
        route: The route name sent with each batch; the worker resolves it.
    """

    def __init__(self, queue: CeleryQueue, route: str) -> None:
        self.celery_queue = queue
        self.route = route
        self._connection: Any = None
        self._lock = threading.Lock()
        _publishers.add(self)

    def deliver(self, batch: Sequence[Message]) -> None:
        """Publish ``batch`` as one task.

        A message that cannot be sent as JSON is refused alone (marked
        :data:`~instrumentor.exceptions.INVALID_MESSAGE`); the others are published.

        Raises:
            RetryableDeliveryError: If the broker failed.
            PartialDeliveryError: If a message was refused; ``retry`` holds the others if the
                broker failed too.
        """
        items, failed = _payload(batch)
        error = self._publish([data for _, data in items]) if items else None
        unencodable = _unencodable(items) if error is not None else []
        if unencodable:  # not the broker: a message JSON cannot encode (e.g. a huge int)
            failed += unencodable
            items = [item for item in items if all(item[0] is not m for m, _ in unencodable)]
            error = self._publish([data for _, data in items]) if items else None
        if failed:
            raise PartialDeliveryError(
                f"{len(failed)} of {len(batch)} messages cannot be published: {failed[0][1]}",
                retry=[message for message, _ in items] if error is not None else [],
                failed=failed,
            )
        if error is not None:
            raise error from None  # the broker's exception may hold its URL: never chained

    def _publish(self, payload: list[dict[str, Any]]) -> RetryableDeliveryError | None:
        """Publish ``payload`` as one task; the error if the broker (or encoding) failed."""
        queue = self.celery_queue
        with self._lock:
            try:
                queue.app.send_task(
                    queue.task_name,
                    args=(self.route, payload),
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
                return RetryableDeliveryError(
                    f"could not publish to the Celery broker: {safe_error(exc, queue.app)}"
                )
        return None

    def _connect(self) -> Any:
        if self._connection is None:
            timeout = self.celery_queue.publish_timeout
            connection = self.celery_queue.app.connection_for_write(connect_timeout=timeout)
            if connection.transport.driver_type == "redis":
                options: dict[str, Any] = {
                    "socket_timeout": timeout,
                    "socket_connect_timeout": timeout,
                }
            elif connection.transport.driver_type == "amqp":
                options = {"read_timeout": timeout, "write_timeout": timeout}
            else:
                options = {}
            options = {**options, **(connection.transport_options or {})}
            if connection.transport.driver_type == "amqp":
                options["confirm_publish"] = True  # not negotiable: no confirm, no "published"
            connection.transport_options = options
            self._connection = connection
        return self._connection

    def _discard_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.release()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock and no connection (the parent's are the parent's).

        The parent's lock may be held by its publishing thread, which the child does not have,
        and its socket belongs to the parent: start over without touching either.
        """
        self._lock = threading.Lock()
        self._connection = None

    def close(self) -> None:
        """Release the broker connection."""
        with self._lock:
            self._discard_connection()

    def __repr__(self) -> str:
        return f"CeleryPublisher({self.route!r}, queue={self.celery_queue.queue!r})"


def _invalid(exc: BaseException) -> str:
    """The failure reason of a message that cannot be sent as JSON."""
    return f"cannot be sent as JSON ({type(exc).__name__}: {describe(exc)}) ({INVALID_MESSAGE})"


def _payload(batch: Sequence[Message]) -> tuple[list[Item], list[tuple[Message, str]]]:
    """Each message with its task form, and the messages that have none (with the reason)."""
    items: list[Item] = []
    failed: list[tuple[Message, str]] = []
    for message in batch:
        try:
            items.append((message, message_to_data(message)))
        except Exception as exc:
            failed.append((message, _invalid(exc)))
    return items, failed


def _unencodable(items: list[Item]) -> list[tuple[Message, str]]:
    """The messages whose task form JSON cannot encode, with the reason."""
    failed: list[tuple[Message, str]] = []
    for message, data in items:
        try:
            json.dumps(data)
        except Exception as exc:
            failed.append((message, _invalid(exc)))
    return failed


def _after_fork_in_child() -> None:
    for publisher in list(_publishers):
        publisher.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_visibility_timeout(app: Any, max_delay: float) -> None:
    url = getattr(app.conf, "broker_write_url", None) or getattr(app.conf, "broker_url", None)
    scheme = str(url or "").split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "sentinel"):
        return
    options = getattr(app.conf, "broker_transport_options", None) or {}
    visibility = float(options.get("visibility_timeout", REDIS_VISIBILITY_TIMEOUT))
    longest = max(max_delay, MAX_RETRY_AFTER)
    if longest >= visibility:
        raise ConfigurationError(
            f"on Redis a retry may wait up to {longest:.0f} s, but an unacknowledged task is "
            f"delivered again after visibility_timeout={visibility:.0f} s: lower max_delay or "
            "raise broker_transport_options['visibility_timeout']"
        )
