"""The SQLite outbox next to the memory queue: throughput, and what the caller pays.

Both destinations deliver for real over HTTP on loopback to ``tests.fault_server.FaultServer``
(in a thread of this process) through a ``SegmentTransport``. Two sections, in one run:

* ``throughput``: N events tracked as fast as possible; events/s until the worker has
  *persisted* them all (outbox only) and until the sink has *accepted* them all. The median of
  a few rounds, memory and outbox alternating.
* ``caller``: per-call p50/p99 of ``@tracks`` with the outbox on and off, measured side by side:
  round-robin batches alternating between the two configurations, GC off while timing (the
  method of bench_caller.py). The workers persist and deliver in the background meanwhile.

The figures are for people to read; compare ratios from one run. Always exits 0.

    python benchmarks/bench_outbox.py [--quick] [--events N] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import instrumentor
from instrumentor import EventRegistry, bind_context, configure, event, tracks
from instrumentor.delivery import Destination, OutboxDestination
from instrumentor.transports import SegmentTransport

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fault_server import FaultServer  # noqa: E402


class Events(EventRegistry):
    REPORT_CREATED = event("Report_Created", category="core_value", group_level="project")


@tracks(Events.REPORT_CREATED)
def create_report(n: int) -> int:
    return n


def build(kind: str, server: FaultServer, directory: Path, round_: int) -> Destination:
    transport = SegmentTransport("bench", endpoint=server.url, timeout=10.0)
    if kind == "memory":
        return Destination(transport, max_queue=1_000_000, batch_size=100)
    path = directory / f"outbox-{round_}.db"
    return OutboxDestination(transport, path=path, max_queue=1_000_000, batch_size=100)


def wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.002)
    return False


def throughput(server: FaultServer, directory: Path, events: int, rounds: int) -> dict[str, float]:
    results: dict[str, list[float]] = {"memory": [], "outbox persisted": [], "outbox": []}
    for round_ in range(rounds):
        for kind in ("memory", "outbox") if round_ % 2 == 0 else ("outbox", "memory"):
            server.reset()
            destination = build(kind, server, directory, round_)
            configure(transports=[destination])
            create_report(-1)  # warm up: client, connection, identify/group sent
            destination.flush(10)
            before = destination.stats()
            started = time.perf_counter()
            for n in range(events):
                create_report(n)
            if kind == "outbox":
                persisted = before.persisted + events
                wait(lambda d=destination, n=persisted: d.stats().persisted >= n, 120)
                results["outbox persisted"].append(events / (time.perf_counter() - started))
            delivered = before.delivered + events  # one track per call: identify/group were sent
            wait(lambda d=destination, n=delivered: d.stats().delivered >= n, 120)
            results[kind].append(events / (time.perf_counter() - started))
            destination.shutdown(10)
    return {kind: statistics.median(rates) for kind, rates in results.items()}


def caller(
    server: FaultServer, directory: Path, samples: int, batch: int
) -> dict[str, dict[str, float]]:
    destinations = {kind: build(kind, server, directory, 99) for kind in ("memory", "outbox")}
    times: dict[str, list[float]] = {kind: [] for kind in destinations}
    for destination in destinations.values():  # warm up both
        configure(transports=[destination])
        for n in range(batch * 5):
            create_report(n)
    gc.collect()
    gc.disable()
    try:
        for sample in range(samples):
            order = list(destinations) if sample % 2 == 0 else list(reversed(destinations))
            for kind in order:
                configure(transports=[destinations[kind]])
                started = time.perf_counter_ns()
                for n in range(batch):
                    create_report(n)
                times[kind].append((time.perf_counter_ns() - started) / batch)
    finally:
        gc.enable()
    for destination in destinations.values():
        destination.shutdown(10)
    out = {}
    for kind, values in times.items():
        values.sort()
        out[kind] = {"p50_ns": values[len(values) // 2], "p99_ns": values[int(len(values) * 0.99)]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a CI smoke test)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds, args.samples = 2_000, 1, 100
    print(f"Python {platform.python_version()} on {platform.platform()}")
    bind_context(user_id="u_bench", account_id="acc_1", workspace_id="ws_1", project_id="p_1")
    with tempfile.TemporaryDirectory() as tmp, FaultServer(status=200) as server:
        directory = Path(tmp)
        rates = throughput(server, directory, args.events, args.rounds)
        costs = caller(server, directory, args.samples, args.batch)
    instrumentor.reset_configuration()
    print(f"\n### Throughput: {args.events:,} events, median of {args.rounds}\n")
    print("| destination | events/s |\n|---|---:|")
    for kind, rate in rates.items():
        print(f"| {kind} | {rate:,.0f} |")
    print(f"\n### Caller cost of a tracked call ({args.samples} x {args.batch} calls each)\n")
    print("| destination | p50 | p99 |\n|---|---:|---:|")
    for kind, cost in costs.items():
        print(f"| {kind} | {cost['p50_ns'] / 1000:.2f} µs | {cost['p99_ns'] / 1000:.2f} µs |")
    ratio = costs["outbox"]["p50_ns"] / costs["memory"]["p50_ns"]
    print(f"\noutbox / memory caller p50: {ratio:.2f}x (target: at most 1.2x) ", end="")
    print("PASS" if ratio <= 1.2 else "MISS")
    if args.json:
        args.json.write_text(json.dumps({"throughput": rates, "caller": costs}, indent=2))


if __name__ == "__main__":
    main()
