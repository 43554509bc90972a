"""Delivery metrics reach a real OpenTelemetry SDK (in a subprocess: the provider is global)."""

from __future__ import annotations

import json
import textwrap

from tests.support import run_python

SCRIPT = textwrap.dedent(
    """
    import json
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    import instrumentor
    from instrumentor import bind_context
    from instrumentor.delivery import Destination, RetryPolicy
    from instrumentor.exceptions import RetryableDeliveryError
    from tests.plan import Events

    class FlakyOnce:
        calls = 0
        def deliver(self, batch):
            FlakyOnce.calls += 1
            if FlakyOnce.calls == 1:
                raise RetryableDeliveryError("503")
        def close(self):
            pass

    destination = Destination(FlakyOnce(), name="flaky", linger=0.01,
                              retry=RetryPolicy(base_delay=0.001, max_delay=0.002))
    instrumentor.configure(transports=[destination])
    bind_context(user_id="u", account_id="a")
    for _ in range(4):
        instrumentor.track(Events.PLAN_UPGRADED)
    destination.flush(5)
    values = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attrs = dict(point.attributes)
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count
                    values[metric.name] = (value, attrs.get("instrumentor.destination"))
    print(json.dumps(values))
    """
)


def test_metrics_after_a_run_with_a_fault() -> None:
    """Enqueued, delivered, retried, duration and queue depth carry the right values."""
    result = run_python(code=SCRIPT)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    # 4 events: identify + group + track for the first, then track only (bundled once).
    assert values["instrumentor.events.enqueued"] == [4, "flaky"]
    assert values["instrumentor.messages.delivered"] == [6, "flaky"]
    assert values["instrumentor.messages.retried"][1] == "flaky"
    assert values["instrumentor.messages.retried"][0] >= 2
    assert values["instrumentor.delivery.duration"][0] >= 2  # attempts recorded
    assert values["instrumentor.queue.depth"] == [0, "flaky"]
    assert "instrumentor.messages.failed" not in values


def test_no_sdk_means_no_cost_and_no_error() -> None:
    """Without an SDK the instruments are no-ops and delivery works as usual."""
    code = textwrap.dedent(
        """
        import instrumentor
        from instrumentor import bind_context
        from instrumentor.delivery import Destination
        from instrumentor.transports import MemoryTransport
        from tests.plan import Events
        memory = MemoryTransport()
        memory.inline = False  # force the queued path
        destination = Destination(memory, linger=0.01)
        instrumentor.configure(transports=[destination])
        bind_context(user_id="u", account_id="a")
        instrumentor.track(Events.PLAN_UPGRADED)
        print(destination.flush(5).pending, len(memory.messages))
        """
    )
    result = run_python(code=code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "3"]
