"""OpenTelemetry: span events on the caller's span, trace ids on messages, quiet delivery.

The SDK's tracer provider is process-global, so each check runs in a fresh interpreter with the
real opentelemetry-sdk and its in-memory span exporter.
"""

from __future__ import annotations

import json
import logging
import textwrap
from typing import Any

import pytest

from instrumentor import bind_context, configure, track
from instrumentor._otel import suppress_instrumentation
from instrumentor.transports import MemoryTransport, OTelTransport
from tests.plan import Events
from tests.support import run_python

SDK = """
    import json
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("app")

    import instrumentor
    from instrumentor import bind_context, track, tracks
    from instrumentor.transports import MemoryTransport
    from tests.plan import Events
    memory = MemoryTransport()
"""


def run(code: str) -> Any:
    result = run_python(code=textwrap.dedent(SDK) + textwrap.dedent(code))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_event_lands_on_the_callers_span_with_its_ids_on_the_message() -> None:
    """Tracked inside a span: a span event there, trace and span ids in the track's context."""
    out = run(
        """
        instrumentor.configure(transports=[memory])
        bind_context(user_id="u_1", account_id="acc_1", project_id="proj_1")

        @tracks(Events.REPORT_CREATED)
        def create():
            return 1

        with tracer.start_as_current_span("POST /reports") as span:
            create()
            ids = (format(span.get_span_context().trace_id, "032x"),
                   format(span.get_span_context().span_id, "016x"))
        track(Events.PLAN_UPGRADED)  # no current span: no event, no ids
        (request,) = exporter.get_finished_spans()
        print(json.dumps({
            "span": request.name,
            "events": [(e.name, dict(e.attributes)) for e in request.events],
            "contexts": [dict(m.context) for m in memory.tracks],
            "ids": ids,
        }))
        """
    )
    assert out["span"] == "POST /reports"
    assert out["events"] == [
        [
            "Report_Created",
            {
                "instrumentor.event": "Report_Created",
                "instrumentor.category": "core_value",
                "instrumentor.group_level": "project",
                "instrumentor.group_id": "proj_1",
            },
        ]
    ]
    ids = out["ids"]
    assert isinstance(ids, list)
    assert out["contexts"] == [{"traceId": ids[0], "spanId": ids[1]}, {}]


def test_user_ids_only_when_asked() -> None:
    """No PII by default; span_event_user=True adds enduser.id."""
    out = run(
        """
        instrumentor.configure(transports=[memory], span_event_user=True)
        bind_context(user_id="u_7", account_id="acc_1")
        with tracer.start_as_current_span("job"):
            track(Events.PLAN_UPGRADED)
        (span,) = exporter.get_finished_spans()
        print(json.dumps({"attrs": dict(span.events[0].attributes)}))
        """
    )
    assert out["attrs"]["enduser.id"] == "u_7"


def test_span_events_can_be_turned_off() -> None:
    """span_events=False: nothing on the span, no ids on the message."""
    out = run(
        """
        instrumentor.configure(transports=[memory], span_events=False)
        bind_context(user_id="u_1", account_id="acc_1")
        with tracer.start_as_current_span("job"):
            track(Events.PLAN_UPGRADED)
        (span,) = exporter.get_finished_spans()
        print(json.dumps({"events": len(span.events), "context": dict(memory.tracks[0].context)}))
        """
    )
    assert out == {"events": 0, "context": {}}


def test_otel_transport_emits_product_events_as_spans() -> None:
    """mode='span': one span per product event with its fields; no user id unless asked."""
    out = run(
        """
        instrumentor.configure(transports=[instrumentor.transports.OTelTransport(mode="span")])
        bind_context(user_id="u_1", account_id="acc_1")
        track(Events.PLAN_UPGRADED, properties={"seats": 5, "tags": ["a", "b"], "n": None})
        spans = exporter.get_finished_spans()
        print(json.dumps([(s.name, dict(s.attributes)) for s in spans]))
        """
    )
    spans: list[list[Any]] = out
    assert [name for name, _ in spans] == ["Plan_Upgraded"]  # product events only
    attributes = spans[0][1]
    assert attributes["instrumentor.category"] == "billing"
    assert attributes["instrumentor.properties.seats"] == 5
    assert attributes["instrumentor.properties.tags"] == ["a", "b"]
    assert "instrumentor.properties.n" not in attributes
    assert "enduser.id" not in attributes


def test_otel_transport_span_event_mode_and_options() -> None:
    """mode='span_event' adds to the caller's span; include_* options add calls and the user."""
    out = run(
        """
        transport = instrumentor.transports.OTelTransport(include_calls=True, include_user=True)
        instrumentor.configure(transports=[transport], span_events=False)
        bind_context(user_id="u_1", user_traits={"email": "a@b.c"}, account_id="acc_1")
        with tracer.start_as_current_span("request"):
            track(Events.PLAN_UPGRADED)
        (span,) = exporter.get_finished_spans()
        print(json.dumps([(e.name, dict(e.attributes)) for e in span.events]))
        """
    )
    events: list[list[Any]] = out
    assert [name for name, _ in events] == ["identify", "group", "Plan_Upgraded"]
    assert events[0][1]["instrumentor.traits.email"] == "a@b.c"
    assert events[2][1]["enduser.id"] == "u_1"


def test_span_events_off_from_the_environment() -> None:
    """ANALYTICS_SPAN_EVENTS=false is read (and a bad value is an error)."""
    from instrumentor import ConfigurationError, Settings

    assert Settings.from_env({"ANALYTICS_SPAN_EVENTS": "false"}).span_events is False
    with pytest.raises(ConfigurationError, match="ANALYTICS_SPAN_EVENTS"):
        Settings.from_env({"ANALYTICS_SPAN_EVENTS": "bogus"})


def test_a_remote_parent_gives_ids_without_an_event() -> None:
    """A valid but non-recording span (e.g. from traceparent): ids on the message, no event."""
    out = run(
        """
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        from opentelemetry.trace import set_span_in_context
        from opentelemetry import context as otel_context
        instrumentor.configure(transports=[memory])
        bind_context(user_id="u_1", account_id="acc_1")
        parent = SpanContext(trace_id=0x1234, span_id=0x42, is_remote=True,
                             trace_flags=TraceFlags(0))
        token = otel_context.attach(set_span_in_context(NonRecordingSpan(parent)))
        track(Events.PLAN_UPGRADED)
        otel_context.detach(token)
        print(json.dumps(dict(memory.tracks[0].context)))
        """
    )
    assert out == {"traceId": f"{0x1234:032x}", "spanId": f"{0x42:016x}"}


def test_a_failing_sdk_keeps_the_event_and_its_ids() -> None:
    """add_event raising costs the span event only; the track and its ids go out."""
    out = run(
        """
        from opentelemetry.sdk.trace import Span
        def boom(self, *args, **kwargs):
            raise RuntimeError("sdk bug")
        Span.add_event = boom
        instrumentor.configure(transports=[memory])
        bind_context(user_id="u_1", account_id="acc_1")
        with tracer.start_as_current_span("request"):
            track(Events.PLAN_UPGRADED)
        print(json.dumps({"n": len(memory.tracks), "ids": sorted(memory.tracks[0].context)}))
        """
    )
    assert out == {"n": 1, "ids": ["spanId", "traceId"]}


def test_thread_pools_keep_the_span_with_the_helper() -> None:
    """with_current_context carries the OpenTelemetry span into a thread pool."""
    out = run(
        """
        import concurrent.futures
        from instrumentor import with_current_context
        instrumentor.configure(transports=[memory])
        bind_context(user_id="u_1", account_id="acc_1")
        with tracer.start_as_current_span("request"):
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                pool.submit(with_current_context(track), Events.PLAN_UPGRADED).result()
        (span,) = exporter.get_finished_spans()
        print(json.dumps({"events": [e.name for e in span.events],
                          "ids": sorted(memory.tracks[0].context)}))
        """
    )
    assert out == {"events": ["Plan_Upgraded"], "ids": ["spanId", "traceId"]}


def test_without_an_sdk_nothing_is_added() -> None:
    """No SDK installed: tracks carry no trace ids, and nothing fails."""
    memory = MemoryTransport()
    configure(transports=[memory])
    bind_context(user_id="u_1", account_id="acc_1")
    track(Events.PLAN_UPGRADED)
    assert dict(memory.tracks[0].context) == {}


def test_delivery_runs_with_instrumentation_suppressed() -> None:
    """The worker's provider calls see OpenTelemetry's suppression keys set."""
    from opentelemetry import context as otel_context

    from instrumentor.delivery import Destination

    seen: list[object] = []

    class Probe:
        def deliver(self, batch: object) -> None:
            seen.append(otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY))
            seen.append(otel_context.get_value(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY))

        def close(self) -> None:
            pass

    destination = Destination(Probe(), linger=0.01)
    configure(transports=[destination])
    bind_context(user_id="u_1", account_id="acc_1")
    track(Events.PLAN_UPGRADED)
    destination.flush(5)
    destination.shutdown(1)
    assert seen[:2] == [True, True]
    assert otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY) is None


def test_suppression_is_scoped() -> None:
    """suppress_instrumentation() restores the previous context on exit."""
    from opentelemetry import context as otel_context

    with suppress_instrumentation():
        assert otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY) is True
    assert otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY) is None


def test_otel_transport_log_mode(caplog: pytest.LogCaptureFixture) -> None:
    """mode='log': one INFO record per message on instrumentor.events, fields as extras."""
    configure(transports=[OTelTransport(mode="log")])
    bind_context(user_id="u_1", account_id="acc_1")
    with caplog.at_level(logging.INFO, "instrumentor.events"):
        track(Events.PLAN_UPGRADED)
    records = [r for r in caplog.records if r.name == "instrumentor.events"]
    assert [r.getMessage() for r in records] == ["Plan_Upgraded"]
    assert getattr(records[0], "instrumentor.group_id") == "acc_1"
    assert not hasattr(records[0], "enduser.id")


def test_otel_transport_rejects_unknown_modes() -> None:
    """A wrong mode is a configuration error."""
    from instrumentor import ConfigurationError

    with pytest.raises(ConfigurationError):
        OTelTransport(mode="metric")  # type: ignore[arg-type]
