"""OpenTelemetry: span events on the caller's span, trace ids on messages, quiet delivery.

The SDK's tracer provider is process-global, so each check runs in a fresh interpreter with the
real opentelemetry-sdk and its in-memory span exporter.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from instrumentor import MemoryTransport, OTelTransport, bind_context, configure, track
from instrumentor.otel import suppress_instrumentation
from tests.plan import Events

ROOT = Path(__file__).resolve().parent.parent

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
    from instrumentor import MemoryTransport, bind_context, tracks, track
    from tests.plan import Events
    memory = MemoryTransport()
"""


def run(code: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SDK) + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
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


def test_otel_transport_emits_spans() -> None:
    """OTelTransport(mode='span') turns each message into a span with its fields."""
    out = run(
        """
        instrumentor.configure(transports=[instrumentor.OTelTransport()])
        bind_context(user_id="u_1", account_id="acc_1")
        track(Events.PLAN_UPGRADED, properties={"seats": 5})
        spans = exporter.get_finished_spans()
        print(json.dumps([(s.name, dict(s.attributes)) for s in spans]))
        """
    )
    spans: list[list[Any]] = out
    assert [name for name, _ in spans] == ["identify", "group", "Plan_Upgraded"]
    attributes = spans[2][1]
    assert attributes["instrumentor.category"] == "billing"
    assert attributes["instrumentor.properties.seats"] == 5


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

    from instrumentor import Destination

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
    assert [r.getMessage() for r in records] == ["identify", "group", "Plan_Upgraded"]
    assert records[2].otel_attributes["instrumentor.group_id"] == "acc_1"  # type: ignore[attr-defined]


def test_otel_transport_rejects_unknown_modes() -> None:
    """A wrong mode is a configuration error."""
    from instrumentor import ConfigurationError

    with pytest.raises(ConfigurationError):
        OTelTransport(mode="metric")  # type: ignore[arg-type]
