"""Caller cost of tracking with ``CeleryQueue`` next to the default in-memory queue.

What is measured: the time the *calling thread* spends per ``track()``, with the destination's
thread really delivering meanwhile: to a provider stand-in (memory queue) or to a Celery broker
(``CeleryQueue``; Redis at ``--broker``, a broker that is down when ``--down`` is given). The
rows alternate in rounds so that machine noise hits both alike. The caller only ever appends to
a deque, so the rows should match; the figures are for people to read (the script exits 0).

    python benchmarks/bench_celery.py [--broker redis://127.0.0.1:6379/11] [--events N] [--down]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Sequence

from celery import Celery

import instrumentor
from instrumentor import EventRegistry, bound_context, configure, event
from instrumentor.celery import CeleryQueue
from instrumentor.delivery import Destination
from instrumentor.transports import Message


class Events(EventRegistry):
    EXPORT_FINISHED = event("Export_Finished", category="feature_usage")


class Sink:
    """A provider stand-in that accepts everything at once (the memory-queue row)."""

    def deliver(self, batch: Sequence[Message]) -> None:
        pass

    def close(self) -> None:
        pass


def per_call_ns(events: int) -> list[float]:
    samples = []
    with bound_context(user_id="u_1", account_id="acc_1"):
        for _ in range(events // 50):
            started = time.perf_counter_ns()
            for _ in range(50):
                Events.EXPORT_FINISHED.track()
            samples.append((time.perf_counter_ns() - started) / 50)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--down", action="store_true", help="a broker port where nothing listens")
    args = parser.parse_args()
    broker = "redis://127.0.0.1:1/0" if args.down else args.broker
    app = Celery("bench", broker=broker, set_as_current=False)
    celery_queue = CeleryQueue(app, queue="bench.instrumentor", propagate_context=False)
    rows: dict[str, list[float]] = {"memory queue": [], "CeleryQueue": []}
    for _ in range(args.rounds):
        configure(transports=[Destination(Sink())], queue=None, bundle_ttl=3600)
        rows["memory queue"] += per_call_ns(args.events)
        instrumentor.shutdown(2)
        configure(transports=[Sink()], queue=celery_queue, bundle_ttl=3600)
        rows["CeleryQueue"] += per_call_ns(args.events)
        instrumentor.shutdown(2)
    print(f"Python {sys.version.split()[0]} on {platform.platform()}; broker {broker}")
    print(f"{args.events:,} events x {args.rounds} rounds per row, per-call ns over 50 calls\n")
    print("| row | p50 ns | p90 ns | p99 ns |")
    print("|---|---:|---:|---:|")
    for name, samples in rows.items():
        q = statistics.quantiles(samples, n=100)
        print(f"| {name} | {q[49]:.0f} | {q[89]:.0f} | {q[98]:.0f} |")
    with app.connection_for_write() as connection:  # leave nothing behind on the broker
        if not args.down:
            app.amqp.queues["bench.instrumentor"](connection.default_channel).delete()


if __name__ == "__main__":
    main()
