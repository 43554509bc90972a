"""The caller's cost of @tracks with OpenTelemetry: no SDK, an SDK outside any span, in a span.

One process, rows sampled round-robin (the tracer-provider global is swapped between samples so
the three situations interleave), GC off. Prints a Markdown table; always exits 0.

    python benchmarks/bench_otel.py [--samples N] [--batch K]
"""

from __future__ import annotations

import argparse
import collections
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import instrumentor
from instrumentor import EventRegistry, bind_context, event, tracks
from instrumentor._signals import event_emitted


class BenchOtelEvents(EventRegistry):
    SPAN_MEASURED = event("Span_Measured", category="feature_usage", group_level="project")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()

    sink: collections.deque[object] = collections.deque(maxlen=10_000)
    instrumentor.configure(transports=[])
    event_emitted.connect(lambda sender, *, emission: sink.append(emission))
    bind_context(user_id="u_1", account_id="acc_1", workspace_id="ws_1", project_id="proj_1")

    def plain() -> int:
        return 1

    tracked = tracks(BenchOtelEvents.SPAN_MEASURED)(lambda: 1)
    provider = TracerProvider()  # no exporter: spans record and are dropped at end
    tracer = provider.get_tracer("bench")
    span = tracer.start_span("request")  # kept open; its events are capped by the SDK
    context_with_span = trace.set_span_in_context(span)

    def no_sdk() -> None:
        trace._TRACER_PROVIDER = None

    def with_sdk() -> None:
        trace._TRACER_PROVIDER = provider

    from opentelemetry import context as otel_context

    rows: list[tuple[str, Callable[[], object], Callable[[], None], bool]] = [
        ("undecorated", plain, no_sdk, False),
        ("@tracks, no SDK", tracked, no_sdk, False),
        ("@tracks, SDK, no current span", tracked, with_sdk, False),
        ("@tracks, SDK, inside a recording span", tracked, with_sdk, True),
    ]
    times: dict[str, list[float]] = {name: [] for name, *_ in rows}
    for _name, func, setup, _in_span in rows:  # warm up
        setup()
        func()
    gc.disable()
    try:
        for _ in range(args.samples):
            for name, func, setup, in_span in rows:
                setup()
                token = otel_context.attach(context_with_span) if in_span else None
                started = time.perf_counter_ns()
                for _ in range(args.batch):
                    func()
                elapsed = time.perf_counter_ns() - started
                if token is not None:
                    otel_context.detach(token)
                times[name].append(elapsed / args.batch / 1000)
    finally:
        gc.enable()
        no_sdk()
    base = statistics.median(times["undecorated"])
    print(f"Python {platform.python_version()} on {platform.platform()}")
    print(f"{args.samples} samples x {args.batch} calls, round-robin, GC off\n")
    print("| contender | p50 | p99 | added p50 |")
    print("|---|---:|---:|---:|")
    for name, *_ in rows:
        values = sorted(times[name])
        p50 = statistics.median(values)
        p99 = values[int(len(values) * 0.99) - 1]
        print(f"| {name} | {p50:.3f} µs | {p99:.3f} µs | {p50 - base:.3f} µs |")


if __name__ == "__main__":
    main()
