"""The delivery pipeline's own metrics, through the OpenTelemetry metrics API.

A no-op until the application installs an OpenTelemetry SDK ``MeterProvider``: the API's proxy
meter forwards to it from then on. Everything is recorded on the worker thread, except drops
of a full queue, which are rare by construction.

=================================== ========= ===============================================
instrument                          unit      what
=================================== ========= ===============================================
``instrumentor.events.enqueued``    {event}   events taken off the queue for delivery
``instrumentor.events.dropped``     {event}   events or messages dropped (attribute ``reason``)
``instrumentor.messages.delivered`` {message} messages the provider accepted
``instrumentor.messages.retried``   {message} message deliveries attempted again
``instrumentor.messages.failed``    {message} messages given up
``instrumentor.delivery.duration``  s         time of one delivery attempt
``instrumentor.queue.depth``        {event}   events waiting (observable gauge)
=================================== ========= ===============================================

Every instrument carries the attribute ``instrumentor.destination`` (the destination's name).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Protocol

from opentelemetry import metrics

__all__ = ["DestinationMetrics", "Observed"]


class Observed(Protocol):
    """What the metrics read of a destination: its name and, for the gauge, its queue depth."""

    name: str

    @property
    def queue_depth(self) -> int:
        """Events waiting in the queue now."""


_meter = metrics.get_meter("instrumentor")
_enqueued = _meter.create_counter(
    "instrumentor.events.enqueued", unit="{event}", description="Events taken for delivery"
)
_dropped = _meter.create_counter(
    "instrumentor.events.dropped", unit="{event}", description="Events or messages dropped"
)
_delivered = _meter.create_counter(
    "instrumentor.messages.delivered", unit="{message}", description="Messages accepted"
)
_retried = _meter.create_counter(
    "instrumentor.messages.retried", unit="{message}", description="Messages retried"
)
_failed = _meter.create_counter(
    "instrumentor.messages.failed", unit="{message}", description="Messages given up"
)
_duration = _meter.create_histogram(
    "instrumentor.delivery.duration", unit="s", description="Duration of a delivery attempt"
)
_observed: weakref.WeakSet[Observed] = weakref.WeakSet()


def _queue_depths(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for destination in list(_observed):
        yield metrics.Observation(
            destination.queue_depth, {"instrumentor.destination": destination.name}
        )


_meter.create_observable_gauge(
    "instrumentor.queue.depth",
    callbacks=[_queue_depths],
    unit="{event}",
    description="Events waiting in the queue",
)


class DestinationMetrics:
    """The instruments bound to one destination's name."""

    __slots__ = ("_attributes",)

    def __init__(self, destination: Observed) -> None:
        self._attributes = {"instrumentor.destination": destination.name}
        _observed.add(destination)

    def enqueued(self, count: int) -> None:
        """Events taken off the queue."""
        if count:
            _enqueued.add(count, self._attributes)

    def dropped(self, count: int, reason: str) -> None:
        """Events or messages dropped for ``reason``."""
        _dropped.add(count, {**self._attributes, "reason": reason})

    def delivered(self, count: int) -> None:
        """Messages accepted."""
        if count:
            _delivered.add(count, self._attributes)

    def retried(self, count: int) -> None:
        """Messages about to be retried."""
        _retried.add(count, self._attributes)

    def failed(self, count: int) -> None:
        """Messages given up."""
        _failed.add(count, self._attributes)

    def attempt(self, seconds: float) -> None:
        """One delivery attempt took ``seconds``."""
        _duration.record(seconds, self._attributes)
