"""What ``import instrumentor`` loads: the delivery stack, httpx and the rest only on first use.

Structural checks, not timed ones: each runs in a fresh interpreter and lists the modules that
are loaded at the end. A module that defines events, decorates functions and binds context (and
even tracks, with no transport configured) loads neither httpx, nor the delivery stack, nor the
transports, the integrations, SQLite or OpenTelemetry; building a transport or flushing does.
The time it saves is measured by ``benchmarks/bench_import.py``.
"""

from __future__ import annotations

import json
import textwrap

from tests.support import run_python

#: Module prefixes a process that only defines events must not load.
HEAVY = (
    "httpx",
    "instrumentor.delivery",
    "instrumentor.transports",
    "instrumentor.integrations",
    "sqlite3",
)

LOADED = """
    import json, sys
    print(json.dumps(sorted(
        m for m in sys.modules if m.startswith({prefixes!r}) or m == "opentelemetry"
    )))
"""

EVENTS_MODULE = """
    import instrumentor
    from instrumentor import EventRegistry, bind_context, event, tracks

    class AppEvents(EventRegistry):
        REPORT_CREATED = event("Report_Created", category="core_value", group_level="account")

    @tracks(AppEvents.REPORT_CREATED)
    def create_report(title: str) -> str:
        return title

    bind_context(user_id="u_1", account_id="acc_1")
"""


def loaded_after(code: str) -> list[str]:
    """The heavy modules (and ``opentelemetry``) loaded once ``code`` ran in a fresh interpreter."""
    script = textwrap.dedent(code) + textwrap.dedent(LOADED.format(prefixes=HEAVY))
    result = run_python(code=script)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_import_instrumentor_loads_no_delivery_transport_or_httpx() -> None:
    """A plain ``import instrumentor`` loads none of the heavy modules, nor OpenTelemetry."""
    assert loaded_after("import instrumentor") == []


def test_a_module_defining_events_loads_none_of_them() -> None:
    """Registry, @tracks and bind_context: still nothing heavy."""
    assert loaded_after(EVENTS_MODULE) == []


def test_tracking_with_no_transport_configured_loads_none_of_them() -> None:
    """The first event configures from the environment (no key: no transport); nothing loads."""
    code = (
        EVENTS_MODULE
        + """
    create_report("q3")
    instrumentor.configure(transports=[])
    create_report("q4")
    assert instrumentor.stats() == {}, instrumentor.stats()
    assert "flush" in dir(instrumentor) and "flush" in instrumentor.__all__
    """
    )
    assert loaded_after(code) == []


def test_configuring_an_api_key_loads_the_transport_and_delivery_but_not_the_outbox() -> None:
    """``configure(api_key=...)`` builds the Accoil transport: httpx and delivery, not SQLite."""
    loaded = loaded_after(EVENTS_MODULE + '    instrumentor.configure(api_key="k_test")\n')
    assert {"httpx", "instrumentor.delivery", "instrumentor.transports._accoil"} <= set(loaded)
    assert "sqlite3" not in loaded
    assert not [m for m in loaded if m.startswith("instrumentor.delivery._outbox")]
    assert not [m for m in loaded if m.startswith("instrumentor.integrations")]


def test_an_outbox_loads_sqlite(tmp_path: object) -> None:
    """A configuration with an outbox loads SQLite and the outbox with it."""
    code = (
        EVENTS_MODULE
        + f"""
    instrumentor.configure(api_key="k_test", outbox={str(tmp_path) + "/outbox.db"!r})
    """
    )
    loaded = loaded_after(code)
    assert {"sqlite3", "instrumentor.delivery._outbox_strategy", "httpx"} <= set(loaded)


def test_flush_loads_the_delivery_stack_and_is_its_function() -> None:
    """``instrumentor.flush`` comes from :mod:`instrumentor.delivery`, loaded on first use."""
    code = (
        EVENTS_MODULE
        + """
    result = instrumentor.flush(0.1)
    from instrumentor import aflush, shutdown
    import instrumentor.delivery as delivery
    assert instrumentor.flush is delivery.flush and shutdown is delivery.shutdown
    assert aflush is delivery.aflush
    assert result.pending == 0, result
    """
    )
    loaded = loaded_after(code)
    assert "instrumentor.delivery" in loaded
    assert "httpx" not in loaded  # no transport was built


def test_transports_load_one_by_one() -> None:
    """Taking the memory transport does not import httpx; the Accoil transport does."""
    memory = loaded_after("from instrumentor.transports import MemoryTransport")
    assert "httpx" not in memory
    accoil = loaded_after("from instrumentor.transports import AccoilTransport")
    assert "httpx" in accoil


def test_span_events_work_when_opentelemetry_is_set_up_after_instrumentor() -> None:
    """An SDK installed after ``import instrumentor`` and a first event is used from then on.

    Whether to look for a span is decided once per context and configuration, so the event
    after the SDK is installed is tracked for another user (as the next request would be).
    """
    result = run_python(
        code="""
        import json, sys
        import instrumentor
        from instrumentor import bind_context, track
        from instrumentor.transports import MemoryTransport
        from tests.plan import Events

        memory = MemoryTransport()
        instrumentor.configure(transports=[memory])
        bind_context(user_id="u_1", account_id="acc_1")
        track(Events.PLAN_UPGRADED)  # before OpenTelemetry's trace API is imported at all
        before = "opentelemetry.trace" in sys.modules

        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        bind_context(user_id="u_2", account_id="acc_1")
        with trace.get_tracer("app").start_as_current_span("job"):
            track(Events.PLAN_UPGRADED)
        (span,) = exporter.get_finished_spans()
        print(json.dumps({
            "before": before,
            "events": [e.name for e in span.events],
            "contexts": [sorted(m.context) for m in memory.tracks],
        }))
        """
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "before": False,
        "events": ["Plan_Upgraded"],
        "contexts": [[], ["spanId", "traceId"]],
    }


def test_exit_timeout_set_before_the_delivery_stack_loads_still_applies() -> None:
    """``exit_timeout=0`` configured first still disables the exit flush of a later destination.

    The destination here is connected to the signal directly, so no configuration built it:
    the delivery stack loads after the setting was installed.
    """
    code = """
        import instrumentor
        from instrumentor import bind_context, track
        from tests.plan import Events

        instrumentor.configure(exit_timeout=0, transports=[])

        from instrumentor.delivery import Destination
        from instrumentor.signals import event_emitted

        class Printing:
            def deliver(self, batch):
                print("delivered", len(batch), flush=True)

            def close(self):
                pass

        destination = Destination(Printing(), linger=60, batch_size=1000)
        event_emitted.connect(destination, weak=False)
        bind_context(user_id="u_1", account_id="acc_1")
        track(Events.PLAN_UPGRADED)
        print("exiting", flush=True)
    """
    disabled = run_python(code=code)
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.split() == ["exiting"]  # no flush at exit
    enabled = run_python(code=code.replace("exit_timeout=0", "exit_timeout=2"))
    assert enabled.returncode == 0, enabled.stderr
    assert "delivered" in enabled.stdout  # the control: the exit flush delivers it


def test_wrapt_loads_with_the_first_tracked_function_only() -> None:
    """``import instrumentor`` and a plan load no wrapt; the first ``@tracks`` does."""
    plan_only = """
        import sys
        import instrumentor
        from instrumentor import EventRegistry, event

        class AppEvents(EventRegistry):
            REPORT_CREATED = event("Report_Created", category="core_value")

        print("wrapt" in sys.modules)
    """
    result = run_python(code=textwrap.dedent(plan_only))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    tracked = textwrap.dedent(EVENTS_MODULE) + "\nimport sys\nprint('wrapt' in sys.modules)\n"
    result = run_python(code=tracked)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"
