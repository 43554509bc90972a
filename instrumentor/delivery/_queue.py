"""The queue backend protocol: what ``configure(queue=...)`` accepts.

By default each transport that does I/O is put behind an in-memory
:class:`~instrumentor.delivery.Destination` that calls the provider itself. A queue backend
replaces those: given the settings, it builds the destinations that hand the events on (for
example one per route, publishing batches to Celery); the transports that do I/O are then the
business of whoever consumes the queue. Inline transports and ``Destination`` objects passed
in stay in the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from instrumentor._wiring import Settings
    from instrumentor.delivery._destination import Destination

__all__ = ["QueueBackend"]


@runtime_checkable
class QueueBackend(Protocol):
    """Builds the destinations a configuration publishes through (e.g. ``CeleryQueue``)."""

    def destinations(self, settings: Settings) -> Sequence[Destination]:
        """The destinations for ``settings``, each queueing ``settings.queue_size`` events.

        Called whenever a configuration is installed; must not do I/O. Raises
        :class:`~instrumentor.ConfigurationError` if nothing would be handed on.
        """
