"""The queue backend protocol: what ``configure(queue=...)`` accepts.

By default each transport that does I/O is put behind an in-memory
:class:`~instrumentor.delivery.Destination` that calls the provider itself. A queue backend
replaces that: given the transport the settings chose, it returns the destination to use
instead (for example one whose worker publishes batches to Celery rather than to the provider).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from instrumentor.delivery.destination import Destination
    from instrumentor.transports.base import Transport

__all__ = ["QueueBackend"]


@runtime_checkable
class QueueBackend(Protocol):
    """Builds the destination a transport is delivered through (e.g. ``CeleryQueue``)."""

    def destination(self, transport: Transport, *, max_queue: int) -> Destination:
        """The destination that delivers what ``transport`` would, queueing ``max_queue`` events.

        Called once per transport whenever a configuration is installed; must not do I/O.
        """
