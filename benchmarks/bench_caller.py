"""Caller-side cost of ``@tracks``, side by side with a plain decorator, Segment and PostHog.

What is measured: the time the *calling thread* spends per call, nothing else (no delivery, no
network). Contenders, all timed in one process, interleaved round-robin so that noise on a busy
machine hits each of them alike:

* ``undecorated``: a plain function call; the baseline that "added" is measured against.
* ``floor``: a ``functools.wraps`` decorator that appends to a bounded deque after the call,
  the least any after-the-call tracker can cost.
* ``@tracks``: instrumentor, enabled, context bound, identify/group already sent (the steady
  state), one receiver connected that appends the emission to a bounded deque.
* ``@tracks (disabled)``: the same function with ``configure(enabled=False)``.
* ``segment track()``: ``Client(send=False).track(...)``: builds, validates and JSON-sizes the
  message, then returns just before its ``queue.put`` (so it is slightly flattered).
* ``posthog capture()``: ``Posthog(send=False).capture(...)``: the full capture path up to the
  lane's admission; no consumer thread is started, no flag poller, no network.

Each sample times a batch of ``--batch`` calls with ``perf_counter_ns`` and divides by the batch;
GC is off while timing. Read the ``added p50`` column (p50 minus the baseline p50) and the ratio
column (a row's added p50 over ``@tracks``'s added p50). Absolute figures vary between machines
and runs; ratios from one run are what to compare. The script always exits 0.

    python benchmarks/bench_caller.py [--samples N] [--batch K] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import importlib
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import instrumentor
from instrumentor import EventRegistry, bind_context, configure, event, reset_context, tracks
from instrumentor._signals import event_emitted
from instrumentor.signals import Emission

TARGET_ADDED_NS = 1500.0
TARGET_VS_SEGMENT = 10.0
TARGET_PER_REQUEST_VS_SEGMENT = 12.0
_T = TypeVar("_T")


class Events(EventRegistry):
    REPORT_CREATED = event(
        "Report_Created",
        category="core_value",
        group_level="project",
        description="A user created a report (benchmark).",
    )


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


@dataclass
class Contender:
    name: str
    run: Callable[[range], None]  # makes len(range) calls
    before: Callable[[], None] = lambda: None  # untimed, before each sample
    after: Callable[[], None] = lambda: None  # untimed, after each sample
    per_call_ns: list[float] = field(default_factory=list)


def undecorated(x: int) -> int:
    return x


_floor_sink: collections.deque[str] = collections.deque(maxlen=100_000)


def floor(func: Callable[[int], _T]) -> Callable[[int], _T]:
    @functools.wraps(func)
    def wrapper(x: int) -> _T:
        result = func(x)
        _floor_sink.append("Report_Created")
        return result

    return wrapper


@floor
def floored(x: int) -> int:
    return x


@tracks(Events.REPORT_CREATED)
def create_report(x: int) -> int:
    return x


_sink: collections.deque[Emission] = collections.deque(maxlen=100_000)


def receiver(sender: object, *, emission: Emission) -> None:
    _sink.append(emission)  # a non-blocking enqueue, as a delivery worker's queue would be


def build_contenders(notes: list[str]) -> tuple[list[Contender], list[Callable[[], None]]]:
    configure(enabled=True, transports=[])
    event_emitted.connect(receiver)
    bind_context(user_id="u_1", account_id="acc_1", workspace_id="ws_1", project_id="proj_1")
    create_report(0)  # the first call bundles identify + groups; later ones must not
    create_report(0)
    if len(_sink[-1].messages) != 1:
        notes.append("warning: @tracks is not in the steady state (identify/group re-sent)")

    def loop(func: Callable[[int], object]) -> Callable[[range], None]:
        def run(calls: range) -> None:
            for _ in calls:
                func(1)

        return run

    def disable() -> None:
        configure(enabled=False)

    def re_enable() -> None:
        configure(enabled=True)
        create_report(0)  # a new runtime: restore the steady state before the next sample

    contenders = [
        Contender("undecorated", loop(undecorated)),
        Contender("floor (wraps + deque.append)", loop(floored)),
        Contender("@tracks", loop(create_report)),
        Contender("@tracks (disabled)", loop(create_report), before=disable, after=re_enable),
    ]
    shutdowns: list[Callable[[], None]] = []

    segment = _optional("segment.analytics")
    if segment is None:
        notes.append("segment-analytics-python is not installed: its row is skipped")
    else:
        # send=False: no consumer thread is started and no atexit hook; track() returns
        # (True, msg) right before queue.put.
        seg_client = segment.Client(write_key="bench", send=False, sync_mode=False)
        seg_track = seg_client.track

        def run_segment(calls: range) -> None:
            for _ in calls:
                seg_track(user_id="u_1", event="Report_Created", properties={})

        if seg_track(user_id="u_1", event="Report_Created", properties={})[0] is not True:
            notes.append("warning: segment track() did not accept the message")
        contenders.append(Contender("segment track()", run_segment))
        shutdowns.append(seg_client.join)  # its consumer never started: returns at once

    posthog = _optional("posthog")
    if posthog is None:
        notes.append("posthog is not installed: its row is skipped")
    else:
        # send=False: capture() still builds, enriches and admits the event; consumers are
        # never started. No secret/personal key, so no feature-flag poller.
        ph_client = posthog.Posthog(
            project_api_key="bench",
            host="http://127.0.0.1:9",
            send=False,
            sync_mode=False,
            enable_local_evaluation=False,
        )
        ph_capture = ph_client.capture

        def run_posthog(calls: range) -> None:
            for _ in calls:
                ph_capture("Report_Created", distinct_id="u_1", properties={})

        if ph_capture("Report_Created", distinct_id="u_1", properties={}) is None:
            notes.append("warning: posthog capture() dropped the event")
        contenders.append(Contender("posthog capture()", run_posthog))
        shutdowns.append(ph_client.shutdown)
    return contenders, shutdowns


_requests = itertools.count()


def build_per_request(notes: list[str]) -> list[Contender]:
    """What one web request pays: bind a never-seen user in a never-seen account, workspace
    and project (ids made per request), then one tracked call. The baseline makes the same
    ids and calls the undecorated function; Segment and PostHog get the same ids per call."""

    def ids() -> tuple[str, str, str, str]:
        n = next(_requests)
        return f"usr_{n}", f"acc_{n}", f"ws_{n}", f"proj_{n}"

    def baseline(calls: range) -> None:
        for _ in calls:
            ids()
            undecorated(1)

    def ours(calls: range) -> None:
        for _ in calls:
            user, account, workspace, project = ids()
            token = bind_context(
                user_id=user, account_id=account, workspace_id=workspace, project_id=project
            )
            create_report(1)
            reset_context(token)

    contenders = [Contender("ids + undecorated", baseline), Contender("@tracks", ours)]
    segment = _optional("segment.analytics")
    if segment is not None:
        seg_track = segment.Client(write_key="bench", send=False, sync_mode=False).track

        def run_segment(calls: range) -> None:
            for _ in calls:
                user, _, _, project = ids()  # the same ids made; Segment takes one group
                seg_track(
                    user_id=user,
                    event="Report_Created",
                    properties={},
                    context={"groupId": project},
                )

        contenders.append(Contender("segment track()", run_segment))
    posthog = _optional("posthog")
    if posthog is not None:
        ph_capture = posthog.Posthog(
            project_api_key="bench",
            host="http://127.0.0.1:9",
            send=False,
            sync_mode=False,
            enable_local_evaluation=False,
        ).capture

        def run_posthog(calls: range) -> None:
            for _ in calls:
                user, account, workspace, project = ids()
                groups = {"account": account, "workspace": workspace, "project": project}
                ph_capture("Report_Created", distinct_id=user, properties={}, groups=groups)

        contenders.append(Contender("posthog capture()", run_posthog))
    return contenders


def report_per_request(contenders: list[Contender], args: argparse.Namespace) -> list[Any]:
    """Print the per-request table; return its targets."""
    base = percentile(contenders[0].per_call_ns, 50)
    added = {c.name: percentile(c.per_call_ns, 50) - base for c in contenders}
    ours = added["@tracks"]
    print(f"Per request: bind a never-seen user (3 group levels) + 1 call; GC on; {args.samples}")
    print(f"samples x {args.batch} requests, round-robin\n")
    print("| contender | p50 | p99 | added p50 | added p50 / @tracks added |")
    print("|---|---:|---:|---:|---:|")
    for c in contenders:
        p50, p99 = percentile(c.per_call_ns, 50), percentile(c.per_call_ns, 99)
        ratio = added[c.name] / ours if ours > 0 else math.nan
        cells = [f"{v / 1000:.3f} µs" for v in (p50, p99, added[c.name])]
        print(f"| {c.name} | {' | '.join(cells)} | {ratio:.2f}x |")
    print()
    seg = added.get("segment track()")
    if seg is None or ours <= 0:
        return []
    ratio = seg / ours
    target = f"per request >= {TARGET_PER_REQUEST_VS_SEGMENT:g}x cheaper than segment track()"
    return [(f"{target} (is {ratio:.1f}x)", ratio >= TARGET_PER_REQUEST_VS_SEGMENT)]


def measure(
    contenders: list[Contender], samples: int, batch: int, warmup: int, *, gc_on: bool = False
) -> None:
    calls = range(batch)
    clock = time.perf_counter_ns
    gc.collect()
    if not gc_on:
        gc.disable()
    try:
        for round_ in range(-warmup, samples):
            shift = round_ % len(contenders)  # rotate the order: no contender always goes first
            for contender in contenders[shift:] + contenders[:shift]:
                contender.before()
                start = clock()
                contender.run(calls)
                elapsed = clock() - start
                contender.after()
                if round_ >= 0:
                    contender.per_call_ns.append(elapsed / batch)
            if round_ % 200 == 199 and not gc_on:
                gc.collect()  # untimed; keeps memory flat with the collector off
    finally:
        gc.enable()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(
    contenders: list[Contender],
    args: argparse.Namespace,
    notes: list[str],
    extra: list[Any] | None = None,
) -> None:
    base = percentile(contenders[0].per_call_ns, 50)
    rows: list[dict[str, Any]] = []
    for c in contenders:
        p50, p99 = percentile(c.per_call_ns, 50), percentile(c.per_call_ns, 99)
        rows.append({"name": c.name, "p50_ns": p50, "p99_ns": p99, "added_p50_ns": p50 - base})
    ours = next(r["added_p50_ns"] for r in rows if r["name"] == "@tracks")
    py = f"{sys.version.split()[0]} ({platform.python_implementation()})"
    print(f"Python {py} on {platform.platform()}, instrumentor {instrumentor.__version__}")
    print(f"{args.samples} samples x {args.batch} calls each, round-robin, GC disabled\n")
    print("| contender | p50 | p99 | added p50 | added p50 / @tracks added |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        r["ratio_to_tracks_added"] = ratio = r["added_p50_ns"] / ours if ours > 0 else math.nan
        cells = [f"{r[k] / 1000:.3f} µs" for k in ("p50_ns", "p99_ns", "added_p50_ns")]
        print(f"| {r['name']} | {' | '.join(cells)} | {ratio:.2f}x |")
    target = f"@tracks added p50 <= {TARGET_ADDED_NS / 1000:g} µs (is {ours / 1000:.2f} µs)"
    checks = [*(extra or []), (target, ours <= TARGET_ADDED_NS)]
    seg = next((r["ratio_to_tracks_added"] for r in rows if r["name"] == "segment track()"), None)
    if seg is not None:
        target = f">= {TARGET_VS_SEGMENT:g}x cheaper than segment track() (is {seg:.1f}x)"
        checks.append((target, seg >= TARGET_VS_SEGMENT))
    print("\nTargets (informational: this script always exits 0):")
    for target, met in checks:
        print(f"- {'PASS' if met else 'MISS'}: {target}")
    targets = dict(checks)
    for note in notes:
        print(f"- note: {note}")
    if args.json:
        meta = {"python": sys.version, "platform": platform.platform(), "gc_disabled": True}
        result = meta | {"samples": args.samples, "batch": args.batch, "rows": rows}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result | {"targets": targets, "notes": notes}, out, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=2000, help="timed batches per contender")
    parser.add_argument("--batch", type=int, default=50, help="calls per timed batch")
    parser.add_argument("--quick", action="store_true", help="few samples (CI smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.batch = min(args.samples, 100), min(args.batch, 20)
    notes: list[str] = []
    contenders, shutdowns = build_contenders(notes)
    per_request = build_per_request(notes)
    warmup = max(10, args.samples // 20)
    try:
        measure(contenders, args.samples, args.batch, warmup)
        _sink.clear()  # the bound rows' emissions: not the per-request rows' memory
        measure(per_request, args.samples, args.batch, warmup, gc_on=True)
    finally:
        for shutdown in shutdowns:
            shutdown()
    extra = report_per_request(per_request, args)
    print("Identity already bound (the steady state of one context):\n")
    report(contenders, args, notes, extra)
    return 0  # figures are for humans: a miss never fails CI


if __name__ == "__main__":
    sys.exit(main())
