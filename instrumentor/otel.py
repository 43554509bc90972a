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

import contextlib
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
    """Add ``event`` to the current span if it records; return its (trace id, span id) in hex.

    Never raises: a failing SDK costs the span event, not the product event.
    """
    try:
        span = otel_trace.get_current_span()
        if not span.is_recording():
            return None
        spec = event._value_
        attributes: dict[str, str] = {
            "instrumentor.event": spec.name,
            "instrumentor.category": spec.category,
            "instrumentor.group_level": event._level,
        }
        if group_id is not None:
            attributes["instrumentor.group_id"] = group_id
        if with_user:
            attributes["enduser.id"] = user_id
        span.add_event(spec.name, attributes)
        context = span.get_span_context()
        return format(context.trace_id, "032x"), format(context.span_id, "016x")
    except Exception:  # the SDK's problem must not cost the product event
        return None


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


def _attributes(message: Message) -> dict[str, Any]:
    data = message.to_dict()
    attributes: dict[str, Any] = {
        "instrumentor.type": message.type,
        "instrumentor.message_id": message.message_id,
    }
    if isinstance(message, TrackMessage):
        attributes["instrumentor.event"] = message.event
        attributes["instrumentor.category"] = message.category
        attributes["instrumentor.group_level"] = message.group_type
    if isinstance(message, GroupMessage):
        attributes["instrumentor.group_level"] = message.group_type
    group_id = getattr(message, "group_id", None)
    if group_id is not None:
        attributes["instrumentor.group_id"] = group_id
    if isinstance(message, IdentifyMessage | TrackMessage):
        attributes["enduser.id"] = message.user_id
    for name in ("properties", "traits"):
        for key, value in (data.get(name) or {}).items():
            if isinstance(value, (str, bool, int, float)):
                attributes[f"instrumentor.{name}.{key}"] = value
    return attributes


class OTelTransport:
    """Emits every message through OpenTelemetry instead of (or beside) a provider.

    ``mode="span"``: one zero-length span per message, named after the event (or ``identify``,
    ``group``), at the message's timestamp, with the message's fields as attributes.
    ``mode="log"``: one record per message on the ``instrumentor.events`` logger (at INFO, the
    attributes in ``extra``), which OpenTelemetry's logging handler ships to a collector.

    Args:
        mode: ``"span"`` or ``"log"``.
        logger: The logger for ``mode="log"``.
    """

    #: Delivered on the emitting thread: the SDK's own processors batch and export.
    inline = True

    def __init__(
        self, mode: Literal["span", "log"] = "span", *, logger: logging.Logger | None = None
    ) -> None:
        if mode not in ("span", "log"):
            raise ConfigurationError(f"OTelTransport mode must be 'span' or 'log', not {mode!r}")
        self.mode = mode
        self._logger = logger or logging.getLogger("instrumentor.events")
        self._tracer = otel_trace.get_tracer("instrumentor")

    def deliver(self, batch: Sequence[Message]) -> None:
        """Emit each message of ``batch`` as a span or a log record."""
        for message in batch:
            name = message.event if isinstance(message, TrackMessage) else message.type
            attributes = _attributes(message)
            if self.mode == "log":
                self._logger.info(
                    "%s",
                    name,
                    extra={
                        "otel_attributes": attributes,
                        **{key.replace(".", "_"): value for key, value in attributes.items()},
                    },
                )
                continue
            when = int(message.timestamp.timestamp() * 1e9)
            span = self._tracer.start_span(name, start_time=when, attributes=attributes)
            span.end(end_time=when)

    def close(self) -> None:
        """Nothing to release (the SDK owns its exporters)."""

    def __repr__(self) -> str:
        return f"OTelTransport(mode={self.mode!r})"
