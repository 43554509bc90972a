"""What the publishing side and the worker side of Celery delivery share.

The default names of the queues and the task, how routes are named, what a delivery task needs
to know of its :class:`~instrumentor.celery.CeleryQueue` (:class:`TaskSettings`), and how broker
errors lose their passwords. :mod:`~instrumentor.celery._queue` (publishing) and
:mod:`~instrumentor.celery._task` (the worker's task) both build on it; neither imports the
other's internals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from instrumentor.delivery._attempt import describe

if TYPE_CHECKING:
    from instrumentor.delivery import RetryPolicy

__all__ = [
    "DEFAULT_DEAD_LETTER_QUEUE",
    "DEFAULT_QUEUE",
    "DEFAULT_ROUTE",
    "DEFAULT_TASK_NAME",
    "TaskSettings",
    "broker_secrets",
    "route_names",
    "safe_error",
]

#: The queue the delivery tasks go to by default.
DEFAULT_QUEUE = "instrumentor"
#: The delivery task's default name.
DEFAULT_TASK_NAME = "instrumentor.deliver"
#: Where batches are parked after the last retry, by default.
DEFAULT_DEAD_LETTER_QUEUE = "instrumentor.dead"
#: The route a web process publishes when it names no transports: the worker's first one.
DEFAULT_ROUTE = "default"


class TaskSettings(Protocol):
    """What the delivery task reads of the :class:`~instrumentor.celery.CeleryQueue` it serves."""

    app: Any
    queue: str
    task_name: str
    dead_letter_queue: str
    max_retries: int
    backoff: RetryPolicy


def route_names(transports: Sequence[Any]) -> list[str]:
    """The route of each transport: its class name, numbered ``#2``, ``#3`` when it repeats.

    Web processes publish a batch under its transport's route; a worker resolves the route
    against its own configuration, so both sides must list the same transports in one order.
    """
    names: list[str] = []
    for transport in transports:
        base = type(transport).__qualname__
        names.append(base if base not in names else f"{base}#{names.count(base) + 1}")
    return names


def broker_secrets(app: Any) -> list[str]:
    """The passwords of every broker URL of ``app`` (failover URLs included), to mask."""
    secrets: set[str] = set()
    conf = getattr(app, "conf", None)
    urls: list[Any] = []
    for name in ("broker_write_url", "broker_read_url", "broker_url"):
        value = getattr(conf, name, None) if conf is not None else None
        if isinstance(value, str):
            urls.extend(value.split(";"))
        elif isinstance(value, (list, tuple)):
            urls.extend(value)
    for url in urls:
        with contextlib.suppress(Exception):
            password = urlsplit(str(url).strip()).password
            if password:
                secrets.update({password, unquote(password)})
    with contextlib.suppress(Exception):
        password = app.connection_for_write().password
        if password:
            secrets.add(str(password))
    return sorted(secrets, key=len, reverse=True)


def safe_error(exc: BaseException, app: Any) -> str:
    """``Type: text`` of an error, with every broker password of ``app`` masked."""
    text = f"{type(exc).__name__}: {describe(exc)}"
    for secret in broker_secrets(app):
        text = text.replace(secret, "********")
    return text
