"""OpenTelemetry: product events on the caller's spans, and quiet delivery.

Through ``opentelemetry-api`` only; everything here is a no-op until the application installs an
OpenTelemetry SDK.

- **Span events.** When a span is recording at the moment an event is tracked, the event is
  added to it (``span.add_event(<event name>, ...)``) with its category, group level and group
  id, and the track message carries the trace and span ids in its ``context`` (``traceId``,
  ``spanId``), so product events can be joined with traces. User ids are left out unless
  ``configure(span_event_user=True)``.
- **Quiet delivery.** The delivery workers run with OpenTelemetry's suppression keys set, so the
  provider calls they make are not traced as application work (as OpenTelemetry's own exporters
  do).
- **OTelTransport.** Emits every message as a span or as a log record, for teams that send
  everything through a collector.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from instrumentor.exceptions import ConfigurationError
from instrumentor.messages import GroupMessage, IdentifyMessage, Message, TrackMessage

if TYPE_CHECKING:
    from instrumentor.registry import EventRegistry

__all__ = ["OTelTransport", "span_event", "suppress_instrumentation"]

_SUPPRESSION_KEYS = tuple(
    key
    for key in (
        getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", None),
        getattr(otel_context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None),
    )
    if key is not None
)


def sdk_installed() -> bool:
    """Whether an OpenTelemetry tracer provider has been set (a global read: the hot path)."""
    return otel_trace._TRACER_PROVIDER is not None


def span_event(
    event: EventRegistry, group_id: str | None, user_id: str, with_user: bool
) -> tuple[str, str] | None:
    """Add ``event`` to the current span if it records; return the span's (trace, span) ids.

    The ids are returned for any valid span context (a sampled-out span, or a remote parent
    from ``traceparent``, still joins the event to its trace). Never raises: a failing SDK
    costs the span event, not the product event or its ids.
    """
    try:
        span = otel_trace.get_current_span()
        context = span.get_span_context()
        if not context.is_valid:
            return None
        ids = format(context.trace_id, "032x"), format(context.span_id, "016x")
    except Exception:  # an SDK object that cannot even say its ids
        return None
    try:
        if span.is_recording():
            span.add_event(
                event._value_.name, _event_attributes(event, group_id, user_id, with_user)
            )
    except Exception:  # the SDK's problem must not cost the product event
        pass
    return ids


def _event_attributes(
    event: EventRegistry, group_id: str | None, user_id: str, with_user: bool
) -> dict[str, str]:
    spec = event._value_
    attributes = {
        "instrumentor.event": spec.name,
        "instrumentor.category": spec.category,
        "instrumentor.group_level": event._level,
    }
    if group_id is not None:
        attributes["instrumentor.group_id"] = group_id
    if with_user:
        attributes["enduser.id"] = user_id
    return attributes


@contextlib.contextmanager
def suppress_instrumentation() -> Iterator[None]:
    """Run the block with OpenTelemetry's instrumentation suppressed (for this thread)."""
    ctx = otel_context.get_current()
    for key in _SUPPRESSION_KEYS:
        ctx = otel_context.set_value(key, True, ctx)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


_ATTRIBUTE_TYPES = (str, bool, int, float)


def _attribute(value: Any) -> Any:
    """``value`` if OpenTelemetry takes it as an attribute (a primitive, or a list of one)."""
    if isinstance(value, _ATTRIBUTE_TYPES):
        return value
    if isinstance(value, list) and value and all(type(v) is type(value[0]) for v in value):
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
        """Emit each (track) message of ``batch``."""
        for message in batch:
            if not (self.include_calls or isinstance(message, TrackMessage)):
                continue
            name = message.event if isinstance(message, TrackMessage) else message.type
            attributes = _attributes(message, self.include_user)
            if self.mode == "log":
                self._logger.info("%s", name, extra=attributes)
            elif self.mode == "span_event":
                span = otel_trace.get_current_span()
                if span.is_recording():
                    span.add_event(name, attributes, timestamp=_nanoseconds(message.timestamp))
            else:
                tracer = otel_trace.get_tracer("instrumentor")
                when = _nanoseconds(message.timestamp)
                tracer.start_span(name, start_time=when, attributes=attributes).end(end_time=when)

    def close(self) -> None:
        """Nothing to release (the SDK owns its exporters)."""

    def __repr__(self) -> str:
        return f"OTelTransport(mode={self.mode!r})"


def _nanoseconds(when: datetime.datetime) -> int:
    """Nanoseconds since the epoch, exact to the microsecond (no float rounding)."""
    return calendar.timegm(when.utctimetuple()) * 1_000_000_000 + when.microsecond * 1000
