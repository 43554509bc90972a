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

The transport that emits every message as a span or a log record is
:class:`instrumentor.transports.OTelTransport`.

``import instrumentor`` does not import OpenTelemetry: a tracer provider can only be set through
``opentelemetry.trace``, so until something else imported that module no SDK is installed and
there is no span to join. The trace API is taken on the first check after it was imported; the
context API when a delivery worker first suppresses instrumentation.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from instrumentor._registry import EventRegistry

__all__ = ["sdk_installed", "span_event", "suppress_instrumentation"]

#: ``opentelemetry.trace`` once this process imported it (``None`` until then).
_trace_api: ModuleType | None = None
#: ``opentelemetry.context`` and its suppression keys, once a worker first needed them.
_context_api: ModuleType | None = None
_suppression_keys: tuple[object, ...] = ()


def sdk_installed() -> bool:
    """Whether an OpenTelemetry tracer provider has been set (a global read: the hot path)."""
    otel_trace = _trace_api or _take_trace_api()
    if otel_trace is None:
        return False  # nothing imported the trace API: no provider can have been set
    # A deliberate read of the API's private global: this gate runs on every track, and the
    # public get_tracer_provider() reads the environment on every call while none is set.
    return otel_trace._TRACER_PROVIDER is not None


def _take_trace_api() -> ModuleType | None:
    """``opentelemetry.trace`` if the application imported it (kept for the next calls)."""
    global _trace_api
    if "opentelemetry.trace" not in sys.modules:
        return None  # one dict lookup per track while the application has no OpenTelemetry
    # Lazy on purpose: never the first import (the check above); it waits for one in progress
    # on another thread, so a half-initialised module is never read.
    from opentelemetry import trace

    _trace_api = trace
    return trace


def span_event(
    event: EventRegistry, group_id: str | None, user_id: str, with_user: bool
) -> tuple[str, str] | None:
    """Add ``event`` to the current span if it records; return the span's (trace, span) ids.

    The ids are returned for any valid span context (a sampled-out span, or a remote parent
    from ``traceparent``, still joins the event to its trace). Never raises: a failing SDK
    costs the span event, not the product event or its ids.
    """
    otel_trace = _trace_api or _take_trace_api()
    if otel_trace is None:
        return None
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
                event.routing.name, _event_attributes(event, group_id, user_id, with_user)
            )
    except Exception:  # the SDK's problem must not cost the product event
        pass
    return ids


def _event_attributes(
    event: EventRegistry, group_id: str | None, user_id: str, with_user: bool
) -> dict[str, str]:
    routing = event.routing
    attributes = {
        "instrumentor.event": routing.name,
        "instrumentor.category": routing.spec.category,
        "instrumentor.group_level": routing.level,
    }
    if group_id is not None:
        attributes["instrumentor.group_id"] = group_id
    if with_user:
        attributes["enduser.id"] = user_id
    return attributes


@contextlib.contextmanager
def suppress_instrumentation() -> Iterator[None]:
    """Run the block with OpenTelemetry's instrumentation suppressed (for this thread)."""
    context = _context_api or _take_context_api()
    ctx = context.get_current()
    for key in _suppression_keys:
        ctx = context.set_value(key, True, ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def _take_context_api() -> ModuleType:
    """Import ``opentelemetry.context`` and its suppression keys (on a worker, once)."""
    global _context_api, _suppression_keys
    # Lazy on purpose: only delivery suppresses instrumentation, and the delivery stack is not
    # loaded by `import instrumentor`.
    from opentelemetry import context

    _suppression_keys = tuple(
        key
        for key in (
            getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", None),
            getattr(context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None),
        )
        if key is not None
    )
    _context_api = context
    return context
