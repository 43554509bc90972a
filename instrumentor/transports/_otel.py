"""A transport that emits every product event through OpenTelemetry (spans or log records)."""

from __future__ import annotations

import calendar
import datetime
import logging
from collections.abc import Sequence
from typing import Any, Literal

from opentelemetry import trace as otel_trace

from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor.exceptions import INVALID_MESSAGE, ConfigurationError, PartialDeliveryError

__all__ = ["OTelTransport"]

_ATTRIBUTE_TYPES = (str, bool, int, float)
_INT64 = (-(2**63), 2**63 - 1)  # OpenTelemetry's int attributes are 64-bit (OTLP: int64)


def _attribute(value: Any) -> Any:
    """``value`` if OpenTelemetry takes it as an attribute (a primitive, or a list of one).

    An int outside 64 bits becomes its string (an exporter could not encode it, and would
    lose the whole export with it); so does a list holding one.
    """
    if type(value) is int and not _INT64[0] <= value <= _INT64[1]:
        return str(value)
    if isinstance(value, _ATTRIBUTE_TYPES):
        return value
    if isinstance(value, list) and value and all(type(v) is type(value[0]) for v in value):
        if type(value[0]) is int and not all(_INT64[0] <= v <= _INT64[1] for v in value):
            return [str(v) for v in value]
        return value if isinstance(value[0], _ATTRIBUTE_TYPES) else None
    return None


def _attributes(message: Message, with_user: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "instrumentor.type": message.type,
        "instrumentor.message_id": message.message_id,
    }
    if isinstance(message, TrackMessage):
        attributes["instrumentor.event"] = message.event
        attributes["instrumentor.category"] = message.category
        attributes["instrumentor.group_level"] = message.group_type
        for key, value in message.to_dict().get("properties", {}).items():
            if (kept := _attribute(value)) is not None:
                attributes[f"instrumentor.properties.{key}"] = kept
    if isinstance(message, GroupMessage):
        attributes["instrumentor.group_level"] = message.group_type
    group_id = getattr(message, "group_id", None)
    if group_id is not None:
        attributes["instrumentor.group_id"] = group_id
    if with_user and isinstance(message, IdentifyMessage | TrackMessage):
        attributes["enduser.id"] = message.user_id
    if with_user and isinstance(message, IdentifyMessage):  # traits describe the person
        for key, value in message.to_dict().get("traits", {}).items():
            if (kept := _attribute(value)) is not None:
                attributes[f"instrumentor.traits.{key}"] = kept
    return attributes


class OTelTransport:
    """Emits each product event through OpenTelemetry, for routing everything via a collector.

    ``mode="span_event"``: an event on the span current when the event was tracked (nothing
    outside a recording span). ``mode="span"``: one zero-length span per event at its
    timestamp. ``mode="log"``: one INFO record per event on the ``instrumentor.events`` logger,
    the attributes as the record's extra fields (OpenTelemetry's logging handler ships them).

    Only track messages are emitted unless ``include_calls=True`` (then identify and group too).
    User ids, and an identify's traits, are personal data: left out unless ``include_user=True``.

    Args:
        mode: ``"span_event"``, ``"span"`` or ``"log"``.
        include_calls: Also emit identify and group messages.
        include_user: Include ``enduser.id`` (and identify traits).
        logger: The logger for ``mode="log"``.
    """

    #: Delivered on the emitting thread (the caller's span is current there); the SDK's own
    #: processors batch and export.
    inline = True

    def __init__(
        self,
        mode: Literal["span_event", "span", "log"] = "span_event",
        *,
        include_calls: bool = False,
        include_user: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        if mode not in ("span_event", "span", "log"):
            raise ConfigurationError(
                f"OTelTransport mode must be 'span_event', 'span' or 'log', not {mode!r}"
            )
        self.mode = mode
        self.include_calls = include_calls
        self.include_user = include_user
        self._logger = logger or logging.getLogger("instrumentor.events")

    def deliver(self, batch: Sequence[Message]) -> None:
        """Emit each (track) message of ``batch``.

        Raises:
            PartialDeliveryError: After emitting the others, if a message could not be made
                into attributes (marked :data:`~instrumentor.exceptions.INVALID_MESSAGE`) or
                emitted.
        """
        failed: list[tuple[Message, str]] = []
        for message in batch:
            if not (self.include_calls or isinstance(message, TrackMessage)):
                continue
            try:
                attributes = _attributes(message, self.include_user)
            except Exception as exc:  # that message only
                reason = f"cannot be made attributes ({type(exc).__name__}) ({INVALID_MESSAGE})"
                failed.append((message, reason))
                continue
            try:
                self._emit(message, attributes)
            except Exception as exc:
                failed.append((message, f"could not be emitted ({type(exc).__name__})"))
        if failed:
            raise PartialDeliveryError(
                f"{len(failed)} of {len(batch)} messages were not emitted: {failed[0][1]}",
                failed=failed,
            )

    def _emit(self, message: Message, attributes: dict[str, Any]) -> None:
        name = message.event if isinstance(message, TrackMessage) else message.type
        when = _nanoseconds(message.timestamp)
        if self.mode == "log":
            self._logger.info("%s", name, extra=attributes)
        elif self.mode == "span_event":
            span = otel_trace.get_current_span()
            if span.is_recording():
                span.add_event(name, attributes, timestamp=when)
        else:
            tracer = otel_trace.get_tracer("instrumentor")
            tracer.start_span(name, start_time=when, attributes=attributes).end(end_time=when)

    def close(self) -> None:
        """Nothing to release (the SDK owns its exporters)."""

    def __repr__(self) -> str:
        return f"OTelTransport(mode={self.mode!r})"


def _nanoseconds(when: datetime.datetime) -> int:
    """Nanoseconds since the epoch, exact to the microsecond (no float rounding)."""
    return calendar.timegm(when.utctimetuple()) * 1_000_000_000 + when.microsecond * 1000
