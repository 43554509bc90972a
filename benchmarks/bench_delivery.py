"""Delivery under load: instrumentor's queued destinations next to Segment's and PostHog's clients.

Everything is delivered for real, over HTTP on loopback, to ``tests.fault_server.FaultServer``
(a sink that can also pause, refuse connections and count message ids). By default the sink
runs in a child process, as a provider would be on another machine, so that parsing the
requests does not compete with the libraries for this process's GIL (``--sink thread`` runs it
in-process instead). Sections, all in one run:

* ``realistic`` (the headline, the case users pay for): every request a new user, account,
  workspace and project, one tracked event, each library at its default settings (instrumentor's
  default queue from ``configure(transports=[SegmentTransport(...)])``; Segment and PostHog at
  100 messages per request). Events/s end to end, process CPU per event (callers and workers),
  and bytes per queued event (tracemalloc, the sink paused), each as a ratio to Segment making
  the same calls (identify, a group call per level, track) and to Segment's ``track()`` alone,
  with PASS/MISS against the goals (2x the events/s, 0.5x the CPU, 0.3x the bytes).
* ``caller``: per-call p50/p99 of ``@tracks`` (a ``SegmentTransport`` destination delivering in
  the background), Segment's ``track()`` and PostHog's ``capture()`` (their consumers
  delivering to the same sink): interleaved round-robin batches, GC off, as bench_caller.py.
* ``throughput`` (tuned: one identity bound once, linger 0.05 s): end-to-end events/s for N
  events, from the first call until the sink has accepted all of them: ``SegmentTransport`` vs
  Segment's library (and PostHog); the median of a few rounds, the order rotating.
* ``accoil``: requests/s of ``AccoilTransport`` (one request per message) for 64 users, with
  ``max_in_flight`` 1, 4, 8 and 16, on bare loopback and with 10 ms added per request.
* ``memory`` (tuned: one identity): bytes per queued event (tracemalloc) with the sink paused.
* ``outage``: the sink refuses connections for 10 s while events are tracked at a steady rate:
  caller latency before, during and after the outage; then lost and duplicated messages.
* ``transport``: the worker's CPU in ``SegmentTransport.deliver`` per message, batches of 100
  new users' messages on an ``httpx.MockTransport`` that answers at once (no network).

The figures are for people to read; ratios from one run are what to compare (the reference
machine is a noisy 2-core VM). The script always exits 0.

    python benchmarks/bench_delivery.py [--quick] [--only SECTION] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import math
import multiprocessing
import platform
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

import instrumentor
from instrumentor import (
    EventRegistry,
    bind_context,
    bound_context,
    configure,
    event,
    reset_context,
    tracks,
)
from instrumentor._signals import event_emitted
from instrumentor._wiring import destinations as instrumentor_destinations
from instrumentor.delivery import Destination, RetryPolicy
from instrumentor.signals import Emission
from instrumentor.transports import AccoilTransport, MemoryTransport, SegmentTransport

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from tests.fault_server import FaultServer, Request

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("realistic", "caller", "throughput", "accoil", "memory", "outage", "transport")
TARGET_CALLER_VS_SEGMENT = 12.0  # @tracks p50 at least 12x lower than Segment's track()
TARGET_OUTAGE_P99_NS = 100_000.0  # caller p99 during the outage: microseconds, not a wait
AGENT_OURS = "instrumentor/"  # User-Agent prefixes: who sent a request to the shared sink
AGENT_SEGMENT = "analytics-python/"
AGENT_POSTHOG = "posthog-python/"
EVENT_NAME = "Report_Created"
USERS = 64  # distinct users in the Accoil section


class Events(EventRegistry):
    REPORT_CREATED = event(
        EVENT_NAME,
        category="core_value",
        group_level="project",
        description="A user created a report (benchmark).",
    )


@tracks(Events.REPORT_CREATED)
def create_report(x: int) -> int:
    return x


def undecorated(x: int) -> int:
    return x


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _us(ns: float) -> str:
    return f"{ns / 1000:.3f} µs" if not math.isnan(ns) else "-"


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if not math.isnan(value) else "-"


def _div(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def _bounded(func: Callable[[], object], timeout: float) -> bool:
    """Run ``func`` on a daemon thread; whether it returned within ``timeout`` seconds."""
    thread = threading.Thread(target=func, name="bench-bounded", daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


# --- the sink: a FaultServer, in a child process or in this one -------------------------------


def _fault_server_class() -> type[FaultServer]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.fault_server import FaultServer

    return FaultServer


def _items(record: Request) -> list[Any]:
    """The messages of one request: a batch's items, or the single object sent."""
    body = record.json
    if isinstance(body, dict) and isinstance(body.get("batch"), list):
        return list(body["batch"])
    return [body] if body is not None else []


def _kind(record: Request, item: Any) -> str:
    if isinstance(item, dict) and isinstance(item.get("type"), str):
        return str(item["type"])  # Segment's spec form
    if isinstance(item, dict) and "uuid" in item and "event" in item:
        return "capture"  # PostHog
    return record.path.rstrip("/").rsplit("/", 1)[-1]  # Accoil: /v2/track, /v2/identify...


def _ours(record: Request, agent: str | None) -> bool:
    return record.accepted and (
        agent is None or record.headers.get("user-agent", "").startswith(agent)
    )


def _wait_count(server: FaultServer, count: int, timeout: float, agent: str | None) -> int:
    """Poll until the accepted requests from ``agent`` hold ``count`` messages; the total seen.

    ``FaultServer.wait_for`` re-lists every message id at each request's state change while
    holding the server's lock (quadratic over a run of 50,000 messages), which would throttle
    the very sink being measured; this scans each finished request once.
    """
    deadline = time.monotonic() + timeout
    counted, done = 0, 0
    while True:
        records = server.requests()
        pending = 0
        index = done
        while index < len(records):
            record = records[index]
            if not record.finished:
                break
            if _ours(record, agent):
                counted += len(_items(record))
            index += 1
        done = index
        pending = sum(len(_items(r)) for r in records[done:] if _ours(r, agent))
        total = counted + pending
        if total >= count or time.monotonic() >= deadline:
            return total
        time.sleep(0.002)


def _sink_op(server: FaultServer, op: str, args: tuple[Any, ...]) -> Any:
    if op == "url":
        return server.url
    if op == "cpu":
        return time.process_time()
    if op == "pause":
        return server.pause()
    if op == "resume":
        return server.resume()
    if op == "reset":
        return server.reset()
    if op == "set_status":
        return server.set_status(*args)
    if op == "delay_next":
        return server.delay_next(*args)
    if op == "refuse_for":
        return server.refuse_for(*args)
    if op == "wait_listening":
        return server.wait_listening(*args)
    if op == "message_ids":
        return server.message_ids()
    if op == "wait_count":
        return _wait_count(server, *args)
    if op == "kinds":
        (agent,) = args
        kinds: Counter[str] = Counter()
        requests = 0
        for record in server.requests():
            if _ours(record, agent):
                requests += 1
                kinds.update(_kind(record, item) for item in _items(record))
        return dict(kinds), requests
    raise ValueError(f"unknown sink operation {op!r}")


def _serve_sink(conn: Connection, status: int) -> None:
    """The child process: run a FaultServer and answer operations until told to close."""
    with _fault_server_class()(status=status) as server:
        conn.send(server.url)
        while True:
            op, args = conn.recv()
            if op == "close":
                break
            try:
                conn.send(("ok", _sink_op(server, op, args)))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    conn.send(("ok", None))


class Sink:
    """The operations the benchmark needs from the sink, wherever the server runs."""

    url: str = ""
    where: str = ""

    def _call(self, op: str, *args: Any) -> Any:
        raise NotImplementedError

    def pause(self) -> None:
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")

    def reset(self, status: int = 200) -> None:
        self._call("reset")
        self._call("set_status", status)

    def delay_next(self, n: int, seconds: float) -> None:
        self._call("delay_next", n, seconds)

    def refuse_for(self, seconds: float) -> None:
        self._call("refuse_for", seconds)

    def wait_listening(self, timeout: float) -> bool:
        return bool(self._call("wait_listening", timeout))

    def message_ids(self) -> list[str]:
        return list(self._call("message_ids"))

    def wait_count(self, count: int, timeout: float, agent: str | None) -> int:
        """Wait until ``agent`` delivered ``count`` messages; the number it got."""
        return int(self._call("wait_count", count, timeout, agent))

    def kinds(self, agent: str | None) -> tuple[Counter[str], int]:
        """Messages accepted from ``agent`` by kind (track, identify...), and its requests."""
        kinds, requests = self._call("kinds", agent)
        return Counter(kinds), int(requests)

    def cpu(self) -> float:
        """CPU seconds the sink's process has used (``nan`` when it is this process)."""
        return math.nan

    def close(self) -> None:
        raise NotImplementedError


class ThreadSink(Sink):
    where = "in this process (threads)"

    def __init__(self) -> None:
        self._server = _fault_server_class()(status=200).start()
        self.url = self._server.url

    def _call(self, op: str, *args: Any) -> Any:
        return _sink_op(self._server, op, args)

    def close(self) -> None:
        self._server.close()


class ProcessSink(Sink):
    where = "in a child process"

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_sink, args=(child, 200), name="bench-sink", daemon=True
        )
        self._process.start()
        child.close()
        if not self._conn.poll(60):
            raise RuntimeError("the sink process did not start")
        self.url = str(self._conn.recv())
        self._lock = threading.Lock()

    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            self._conn.send((op, args))
            status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"sink {op}: {value}")
        return value

    def cpu(self) -> float:
        return float(self._call("cpu"))

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, RuntimeError):
            self._call("close")
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()  # the process this script started, by its handle
            self._process.join(2)


# --- shared set-up --------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    sink: Sink
    notes: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    extras: int = 0  # identify + group messages in the first bundle of a new user
    real_per_event: int = 5  # messages one event of a new user (3 levels) sends


def _ours_destination(sink: Sink, transport: Any = None, **options: Any) -> Destination:
    transport = transport or SegmentTransport("bench", endpoint=sink.url)
    if options.pop("default_batches", False):
        options.pop("batch_size", None)  # the transport's preferred batch size (Segment: 500)
    else:
        options.setdefault("batch_size", 100)
    options.setdefault("linger", 0.05)
    options.setdefault("max_queue", 1_000_000)
    return Destination(transport, **options)


def _install(*receivers: Any) -> None:
    configure(enabled=True, transports=list(receivers), bundle_ttl=3600)


def bundle_extras() -> int:
    """How many identify/group messages go with a new user's first track (here: 1 + 2)."""
    memory = MemoryTransport()
    _install(memory)
    with bound_context(user_id="u_probe", account_id="acc_1", project_id="proj_1"):
        create_report(0)
    _install()
    return len(memory.messages) - 1


def _segment_client(sink: Sink, queue: int) -> Any:
    segment = _optional("segment.analytics")
    if segment is None:
        return None
    return segment.Client(
        write_key="bench",
        host=sink.url,
        max_queue_size=queue,
        upload_size=100,
        sync_mode=False,
        send=True,
    )


def _posthog_client(sink: Sink, queue: int) -> Any:
    posthog = _optional("posthog")
    if posthog is None:
        return None
    # No personal/secret key: no feature-flag poller; enable_local_evaluation off anyway.
    return posthog.Posthog(
        project_api_key="bench",
        host=sink.url,
        max_queue_size=queue,
        flush_at=100,
        flush_interval=0.5,
        sync_mode=False,
        enable_local_evaluation=False,
        disable_geoip=True,
    )


def _posthog_queued(client: Any) -> int:
    lane = getattr(client, "_analytics_lane", None)
    queue = getattr(lane, "queue", None)
    return int(queue.qsize()) if queue is not None else -1


def _shutdown_segment(client: Any, timeout: float, notes: list[str], where: str) -> None:
    # shutdown() = queue.join() + consumer join: unbounded, so guarded.
    if not _bounded(client.shutdown, timeout):
        notes.append(f"{where}: Segment's shutdown() did not return within {timeout:g} s")


def _shutdown_posthog(client: Any, timeout: float, notes: list[str], where: str) -> None:
    client.flush(timeout_seconds=timeout)
    if not _bounded(client.shutdown, timeout):
        notes.append(f"{where}: PostHog's shutdown() did not return within {timeout:g} s")


def _table(header: list[str], rows: list[list[str]], align: str = "") -> None:
    align = align or "l" + "r" * (len(header) - 1)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


class CpuMeter:
    """CPU time over wall time, for this process (all its threads) and the sink's process."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._theirs = sink.cpu()
        self._ours = time.process_time()
        self._wall = time.perf_counter()

    def shares(self) -> tuple[float, float]:
        wall = time.perf_counter() - self._wall
        ours = time.process_time() - self._ours
        return ours / wall, (self._sink.cpu() - self._theirs) / wall


def _cpu(shares: tuple[float, float]) -> str:
    ours, theirs = shares
    return f"{ours:.0%} / {theirs:.0%}" if not math.isnan(theirs) else f"{ours:.0%} (both)"


# --- 1. the headline: a fresh identity per request, default settings -------------------------

TARGET_REAL_THROUGHPUT = 2.0  # events/s end to end, at least 2x Segment's
TARGET_REAL_CPU = 0.5  # process CPU per event (callers and worker), at most half of Segment's
TARGET_REAL_BYTES = 0.3  # bytes per queued event, at most 0.3x Segment's
REAL_BATCH = 100  # messages per request for Segment and PostHog (their default)
REAL_OURS = "instrumentor, default queue"
REAL_SAME = "segment Client: identify + 3 group() + track()"
REAL_TRACK = "segment Client: track() alone"
#: The Segment rows the goals are checked against: the same calls, and track() alone.
REAL_REFERENCES = {
    REAL_SAME: "Segment making the same calls",
    REAL_TRACK: "Segment's track() alone",
}
_serial = iter(range(1, 1 << 62))  # ids never seen before: each request is a new identity


def _identity() -> tuple[str, str, str, str]:
    """A user, account, workspace and project nobody used before."""
    n = next(_serial)
    return f"u_{n}", f"acc_{n}", f"ws_{n}", f"p_{n}"


@dataclass
class Library:
    """One library set up as an application would: ``request()`` is one web request."""

    name: str
    agent: str
    per_event: int  # messages one event is at the sink
    request: Callable[[], None]  # a fresh identity, one tracked event
    flush: Callable[[], object]  # ask to send now what is queued (after the last request)
    queued: Callable[[], int]  # events waiting in its queue
    close: Callable[[], None]
    dropped: Callable[[], int] = lambda: 0
    goals: bool = False  # the goals are checked on this row


def _lib_ours(run: Run, batch_size: int | None = None) -> Library:
    """instrumentor as configured by default: the default queue (batches of up to 500
    messages, linger 0.2 s), bundle state on; ``batch_size`` tunes the queue's batches."""
    transport = SegmentTransport("bench", endpoint=run.sink.url)
    if batch_size is None:
        configure(transports=[transport])
    else:
        configure(transports=[Destination(transport, batch_size=batch_size)])
    (dest,) = instrumentor_destinations()

    def request() -> None:
        user, account, workspace, project = _identity()
        with bound_context(
            user_id=user, account_id=account, workspace_id=workspace, project_id=project
        ):
            create_report(1)

    def close() -> None:
        run.sink.resume()
        result = dest.shutdown(20)
        if result.pending:
            run.notes.append(f"realistic: instrumentor left {result.pending:,} pending")
        instrumentor.reset_configuration()

    name = REAL_OURS if batch_size is None else f"tuned: instrumentor, batches of {batch_size}"
    return Library(
        name,
        AGENT_OURS,
        run.real_per_event,
        request,
        lambda: instrumentor.flush(30),
        lambda: dest.stats().queue_depth,
        close,
        lambda: sum(dest.stats().dropped.values()),
        goals=batch_size is None,
    )


def _lib_segment(run: Run, same_calls: bool) -> Library | None:
    """Segment's client at its defaults (upload_size=100, upload_interval=0.5), but for the
    queue's capacity, so that nothing is dropped while the memory part holds every request."""
    segment = _optional("segment.analytics")
    if segment is None:
        return None
    client = segment.Client(write_key="bench", host=run.sink.url, max_queue_size=2_000_000)
    track, identify, group = client.track, client.identify, client.group

    def request_track() -> None:
        user, account, _, _ = _identity()
        track(user_id=user, event=EVENT_NAME, properties={}, context={"groupId": account})

    def request_same() -> None:  # what instrumentor sends for a new user, called by hand
        user, account, workspace, project = _identity()
        identify(user_id=user, traits={})
        group(user_id=user, group_id=account, traits={"group_type": "account"})
        traits = {"group_type": "workspace", "parent_group_id": account}
        group(user_id=user, group_id=workspace, traits=traits)
        traits = {"group_type": "project", "parent_group_id": workspace}
        group(user_id=user, group_id=project, traits=traits)
        track(user_id=user, event=EVENT_NAME, properties={})

    def close() -> None:
        run.sink.resume()
        _shutdown_segment(client, 30, run.notes, "realistic")

    if same_calls:
        queued = client.queue.qsize  # five messages an event
        return Library(
            REAL_SAME, AGENT_SEGMENT, 5, request_same, client.flush, lambda: queued() // 5, close
        )
    return Library(
        REAL_TRACK, AGENT_SEGMENT, 1, request_track, client.flush, client.queue.qsize, close
    )


def _lib_posthog(run: Run) -> Library | None:
    """PostHog's client at its defaults (flush_at=100, flush_interval=5) but for the queue's
    capacity; no feature-flag poller."""
    posthog = _optional("posthog")
    if posthog is None:
        return None
    client = posthog.Posthog(
        project_api_key="bench",
        host=run.sink.url,
        max_queue_size=2_000_000,
        enable_local_evaluation=False,
    )
    capture = client.capture

    def request() -> None:
        user, account, workspace, project = _identity()
        groups = {"account": account, "workspace": workspace, "project": project}
        capture(EVENT_NAME, distinct_id=user, properties={}, groups=groups)

    def close() -> None:
        run.sink.resume()
        _shutdown_posthog(client, 30, run.notes, "realistic")

    return Library(
        "posthog Posthog: capture(groups=...)",
        AGENT_POSTHOG,
        1,
        request,
        lambda: client.flush(timeout_seconds=30),
        lambda: _posthog_queued(client),
        close,
    )


def _real_makers(run: Run) -> list[Callable[[], Library | None]]:
    return [
        lambda: _lib_ours(run),
        lambda: _lib_segment(run, same_calls=True),
        lambda: _lib_segment(run, same_calls=False),
        lambda: _lib_posthog(run),
        lambda: _lib_ours(run, batch_size=REAL_BATCH),
    ]


def _real_throughput_once(run: Run, lib: Library, n: int, timeout: float) -> dict[str, Any]:
    sink = run.sink
    try:
        # Warm-up: full batches delivered before the clock starts (client, connection and
        # threads exist; no one waits out a timer for a partial batch).
        for _ in range(REAL_BATCH):
            lib.request()
        lib.flush()
        sink.wait_count(REAL_BATCH * lib.per_event, timeout, lib.agent)
        sink.reset()
        gc.collect()
        meter = CpuMeter(sink)
        cpu = time.process_time()
        started = time.perf_counter()
        for _ in range(n):
            lib.request()
        calls_s = time.perf_counter() - started
        lib.flush()  # the last partial batch goes now, not when a timer says
        expected = n * lib.per_event
        got = sink.wait_count(expected, timeout, lib.agent)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        shares = meter.shares()
        drops = lib.dropped()
    finally:
        lib.close()
    kinds, requests = sink.kinds(lib.agent)
    return {
        "name": lib.name,
        "events": n,
        "messages": sum(kinds.values()),
        "expected": expected,
        "requests": requests,
        "calls_s": calls_s,
        "elapsed_s": elapsed,
        "events_per_s": n / elapsed if got >= expected else math.nan,
        "cpu_us_per_event": cpu / n * 1e6,
        "dropped": drops,
        "cpu_bench": shares[0],
        "cpu_sink": shares[1],
    }


def _real_memory_once(run: Run, lib: Library, n: int) -> dict[str, Any]:
    sink = run.sink
    sink.reset()
    sink.pause()  # every request is held: nothing leaves
    tops: list[tuple[str, int]] = []
    try:
        for _ in range(2 * REAL_BATCH):  # the consumer takes a first batch and blocks
            lib.request()
        time.sleep(0.5)
        gc.collect()
        before = lib.queued()
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            lib.request()
        time.sleep(0.2)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - start
        diff = tracemalloc.take_snapshot().compare_to(base, "filename")
        tracemalloc.stop()
        queued = lib.queued() - before
        for stat in diff[:6]:
            where = Path(stat.traceback[0].filename)
            tops.append(("/".join(where.parts[-2:]), stat.size_diff))
    finally:
        lib.close()
    return {
        "name": lib.name,
        "events": n,
        "queued": queued,
        "traced_bytes": traced,
        "bytes_per_event": traced / n,
        "top_files": tops,
    }


def section_realistic(run: Run) -> None:
    n = max(REAL_BATCH, run.args.real_events // REAL_BATCH * REAL_BATCH)
    n_memory = run.args.real_memory_events
    rounds = run.args.rounds
    timeout = 60.0 if run.args.quick else 180.0
    makers = _real_makers(run)
    runs: dict[str, list[dict[str, Any]]] = {}
    goals: dict[str, bool] = {}
    for round_ in range(rounds):
        shift = round_ % len(makers)  # rotate the order: no library always goes first
        for make in makers[shift:] + makers[:shift]:
            run.sink.reset()
            lib = make()
            if lib is not None:
                goals[lib.name] = lib.goals
                runs.setdefault(lib.name, []).append(_real_throughput_once(run, lib, n, timeout))
    memory: dict[str, dict[str, Any]] = {}
    for make in makers[:4]:  # tuned batches change nothing that is queued
        lib = make()
        if lib is not None:
            memory[lib.name] = _real_memory_once(run, lib, n_memory)
    run.sink.reset()
    rows: list[dict[str, Any]] = []
    for name, results in runs.items():
        first = results[0]
        rows.append(
            {
                "name": name,
                "goals": goals[name],
                "events_per_s": _median([r["events_per_s"] for r in results]),
                "cpu_us_per_event": _median([r["cpu_us_per_event"] for r in results]),
                "calls_s": _median([r["calls_s"] for r in results]),
                "elapsed_s": _median([r["elapsed_s"] for r in results]),
                "per_event": first["expected"] // first["events"],
                "messages": min(r["messages"] for r in results),
                "expected": first["expected"],
                "requests": max(r["requests"] for r in results),
                "dropped": max(r["dropped"] for r in results),
                "cpu_bench": _median([r["cpu_bench"] for r in results]),
                "cpu_sink": _median([r["cpu_sink"] for r in results]),
                "memory": memory.get(name),
                "runs": results,
            }
        )
    _print_realistic(run, rows, n, n_memory, rounds)
    run.results["realistic"] = {"events": n, "memory_events": n_memory, "rows": rows}
    _realistic_checks(run, rows)


def _real_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's ratios to each Segment reference: ``ratios[reference][measure]``."""
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        r["ratios"] = {}
        for ref_name in REAL_REFERENCES:
            ref = by_name.get(ref_name)
            ref_memory = ref["memory"] if ref is not None else None
            memory = r["memory"]
            r["ratios"][ref_name] = {
                "events_per_s": _div(r["events_per_s"], ref["events_per_s"]) if ref else math.nan,
                "cpu": _div(r["cpu_us_per_event"], ref["cpu_us_per_event"]) if ref else math.nan,
                "bytes": (
                    _div(memory["bytes_per_event"], ref_memory["bytes_per_event"])
                    if memory and ref_memory
                    else math.nan
                ),
            }


def _print_realistic(
    run: Run, rows: list[dict[str, Any]], n: int, n_memory: int, rounds: int
) -> None:
    _real_ratios(rows)
    print(
        f"## 1. A fresh identity per request, default settings: {n:,} requests"
        f" ({f'median of {rounds} rounds' if rounds > 1 else 'one round'})\n"
    )
    print(
        "The case users pay for. Each request brings a user, account, workspace and project never"
        " seen before and tracks one event. instrumentor runs as `configure(transports="
        "[SegmentTransport(...)])` sets it up (the default queue: batches of up to 500"
        " messages, linger 0.2 s) and binds them with `bound_context`, so each event sends"
        f" {run.real_per_event} messages (identify, a group call per level, the track)."
        " Segment is measured twice: making those same calls by hand, and `track()` alone"
        " (one message, no identify or group: less than the others deliver). Segment and"
        f" PostHog send {REAL_BATCH} messages per request (their default, set explicitly);"
        " all post to the same sink, GC on. The clock runs from the first request until the"
        " sink has accepted every message (each library is asked to flush after the last"
        " request). CPU per event: `time.process_time()` of this process (callers and"
        " workers; the sink runs elsewhere) over the events. `tuned` rows have no goal.\n"
    )
    table = []
    for r in rows:
        rate = r["events_per_s"]
        same, alone = (r["ratios"][ref] for ref in REAL_REFERENCES)
        table.append(
            [
                r["name"],
                str(r["per_event"]),
                f"{r['requests']:,}",
                f"{r['elapsed_s']:.2f} s",
                f"{rate:,.0f}" if not math.isnan(rate) else "incomplete",
                _ratio(same["events_per_s"]),
                _ratio(alone["events_per_s"]),
                f"{r['cpu_us_per_event']:.1f} µs",
                _ratio(same["cpu"]),
                _ratio(alone["cpu"]),
                _cpu((r["cpu_bench"], r["cpu_sink"])),
            ]
        )
    _table(
        [
            "library",
            "messages / event",
            "requests",
            "end to end",
            "events/s",
            "vs same calls",
            "vs track() alone",
            "CPU / event",
            "vs same calls",
            "vs track() alone",
            "CPU bench / sink",
        ],
        table,
    )
    print(
        f"Bytes per queued event: {n_memory:,} more requests (each a new user and account) while"
        " the sink holds every request, tracemalloc's growth after gc.collect() over the"
        " events: the queue, and anything else a new identity costs (instrumentor's bundle"
        " state included).\n"
    )
    mem_table = []
    for r in rows:
        m = r["memory"]
        if m is not None:
            same, alone = (r["ratios"][ref] for ref in REAL_REFERENCES)
            mem_table.append(
                [
                    r["name"],
                    f"{m['queued']:,}",
                    f"{m['traced_bytes'] / 1e6:.2f} MB",
                    f"{m['bytes_per_event']:,.0f} B",
                    _ratio(same["bytes"]),
                    _ratio(alone["bytes"]),
                ]
            )
    header = ["library", "queued", "traced growth", "per event", "vs same calls"]
    _table([*header, "vs track() alone"], mem_table)
    ours = next((r for r in rows if r["goals"]), None)
    if ours is not None and ours["memory"] is not None:
        top = ", ".join(
            f"`{where}` {size / n_memory:,.0f} B" for where, size in ours["memory"]["top_files"]
        )
        print(f"Where instrumentor's bytes per queued event were allocated: {top}.\n")


def _realistic_checks(run: Run, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["messages"] != r["expected"] or r["dropped"]:
            run.notes.append(
                f"realistic: {r['name']} delivered {r['messages']:,} of {r['expected']:,}"
                f" messages in its worst round (dropped {r['dropped']:,})"
            )
        m = r["memory"]
        if m is not None and m["queued"] < m["events"] * 0.99:
            run.notes.append(f"realistic: {r['name']} queued only {m['queued']:,} events")
    measured = {r["name"] for r in rows}
    for r in (r for r in rows if r["goals"]):
        for ref, label in REAL_REFERENCES.items():
            if ref not in measured:
                continue
            ratios = r["ratios"][ref]
            rate, cpu, size = ratios["events_per_s"], ratios["cpu"], ratios["bytes"]
            what = f"realistic, against {label}: {r['name']}"
            run.checks += [
                (
                    f"{what} >= {TARGET_REAL_THROUGHPUT:g}x the events/s (is {rate:.2f}x)",
                    rate >= TARGET_REAL_THROUGHPUT,
                ),
                (
                    f"{what} CPU per event <= {TARGET_REAL_CPU:g}x (is {cpu:.2f}x)",
                    cpu <= TARGET_REAL_CPU,
                ),
                (
                    f"{what} bytes per queued event <= {TARGET_REAL_BYTES:g}x (is {size:.2f}x)",
                    size <= TARGET_REAL_BYTES,
                ),
            ]


def realistic_per_event() -> int:
    """How many messages one event of a new user sends (identify + a group per level + track)."""
    memory = MemoryTransport()
    configure(transports=[memory])
    user, account, workspace, project = _identity()
    with bound_context(
        user_id=user, account_id=account, workspace_id=workspace, project_id=project
    ):
        create_report(0)
    instrumentor.reset_configuration()
    return len(memory.messages)


# --- 2. caller cost while delivery runs ----------------------------------------------------


@dataclass
class Contender:
    name: str
    run: Callable[[range], None]  # makes len(range) calls
    backlog: Callable[[], int] = lambda: -1  # events still queued
    agent: str | None = None
    calls: int = 0
    per_call_ns: list[float] = field(default_factory=list)


def _loop(func: Callable[[int], object]) -> Callable[[range], None]:
    def run(calls: range) -> None:
        for _ in calls:
            func(1)

    return run


def measure(contenders: list[Contender], samples: int, batch: int, warmup: int) -> None:
    """bench_caller.py's method: round-robin batches, the order rotating, GC off."""
    calls = range(batch)
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for round_ in range(-warmup, samples):
            shift = round_ % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                start = clock()
                contender.run(calls)
                elapsed = clock() - start
                contender.calls += batch
                if round_ >= 0:
                    contender.per_call_ns.append(elapsed / batch)
            if round_ % 200 == 199:
                gc.collect()  # untimed; keeps memory flat with the collector off
    finally:
        gc.enable()


def section_caller(run: Run) -> None:
    args, sink = run.args, run.sink
    sink.reset()
    dest = _ours_destination(sink)
    _install(dest)
    token = bind_context(user_id="u_caller", account_id="acc_1", project_id="proj_1")
    create_report(0)  # the first call bundles identify + groups; later ones must not
    contenders = [
        Contender("undecorated", _loop(undecorated)),
        Contender(
            "@tracks -> SegmentTransport",
            _loop(create_report),
            backlog=lambda: dest.stats().queue_depth,
            agent=AGENT_OURS,
            calls=1,
        ),
    ]
    queue = 2_000_000
    seg = _segment_client(sink, queue)
    if seg is None:
        run.notes.append("segment-analytics-python is not installed: its rows are skipped")
    else:
        seg_track = seg.track

        def run_segment(calls: range) -> None:
            for _ in calls:
                seg_track(user_id="u_caller", event=EVENT_NAME, properties={})

        contenders.append(
            Contender(
                "segment track()",
                run_segment,
                backlog=seg.queue.qsize,
                agent=AGENT_SEGMENT,
            )
        )
    ph = _posthog_client(sink, queue)
    if ph is None:
        run.notes.append("posthog is not installed: its rows are skipped")
    else:
        ph_capture = ph.capture

        def run_posthog(calls: range) -> None:
            for _ in calls:
                ph_capture(EVENT_NAME, distinct_id="u_caller", properties={})

        contenders.append(
            Contender(
                "posthog capture()",
                run_posthog,
                backlog=lambda: _posthog_queued(ph),
                agent=AGENT_POSTHOG,
            )
        )
    started = time.perf_counter()
    measure(contenders, args.samples, args.batch, warmup=max(10, args.samples // 20))
    timed = time.perf_counter() - started
    backlogs = {c.name: c.backlog() for c in contenders}
    # Drain everything, bounded, then count what each library delivered.
    dest.flush(60)
    if seg is not None:
        _bounded(seg.flush, 60)
    if ph is not None:
        ph.flush(timeout_seconds=60)
    delivered: dict[str, int] = {}
    for c in contenders:
        if c.agent is not None:
            kinds, _ = sink.kinds(c.agent)
            delivered[c.name] = kinds["track"] + kinds["capture"]
    dest.shutdown(5)
    if seg is not None:
        _shutdown_segment(seg, 10, run.notes, "caller")
    if ph is not None:
        _shutdown_posthog(ph, 10, run.notes, "caller")
    reset_context(token)
    _install()

    base = percentile(contenders[0].per_call_ns, 50)
    ours = percentile(contenders[1].per_call_ns, 50)
    rows: list[dict[str, Any]] = []
    print(f"## 2. Caller cost while delivery runs ({args.samples} x {args.batch} calls per row)\n")
    print(
        "All consumers deliver to the sink during the timing. `backlog` is what was still queued"
        f" when timing ended ({timed:.1f} s); `delivered` counts the tracks the sink accepted"
        " after draining.\n"
    )
    table: list[list[str]] = []
    for c in contenders:
        p50, p99 = percentile(c.per_call_ns, 50), percentile(c.per_call_ns, 99)
        row: dict[str, Any] = {
            "name": c.name,
            "p50_ns": p50,
            "p99_ns": p99,
            "added_p50_ns": p50 - base,
            "p50_ratio_to_tracks": _div(p50, ours),
            "calls": c.calls if c.agent else None,
            "delivered": delivered.get(c.name),
            "backlog": backlogs[c.name] if c.agent else None,
        }
        rows.append(row)
        sent = f"{row['delivered']:,} / {c.calls:,}" if c.agent else "-"
        table.append(
            [
                c.name,
                _us(p50),
                _us(p99),
                _us(p50 - base),
                _ratio(row["p50_ratio_to_tracks"]),
                sent,
                f"{backlogs[c.name]:,}" if c.agent else "-",
            ]
        )
    _table(
        [
            "contender",
            "p50",
            "p99",
            "added p50",
            "p50 / @tracks p50",
            "delivered / calls",
            "backlog",
        ],
        table,
    )
    run.results["caller"] = {"samples": args.samples, "batch": args.batch, "rows": rows}
    seg_row = next((r for r in rows if r["name"] == "segment track()"), None)
    if seg_row is not None:
        ratio = seg_row["p50_ratio_to_tracks"]
        run.checks.append(
            (
                f"caller: @tracks p50 >= {TARGET_CALLER_VS_SEGMENT:g}x lower than Segment's "
                f"track() (is {ratio:.1f}x)",
                ratio >= TARGET_CALLER_VS_SEGMENT,
            )
        )
    for r in rows:
        if r["calls"] is not None and r["delivered"] is not None and r["delivered"] < r["calls"]:
            run.notes.append(
                f"caller: {r['name']} delivered {r['delivered']:,} of {r['calls']:,} tracks"
            )


# --- 3. end-to-end throughput ---------------------------------------------------------------


@dataclass
class Feeder:
    """One library set up for a throughput run: ``track()`` is one event, true if accepted."""

    name: str
    agent: str
    kind: str  # the kind of message one event is at the sink
    track: Callable[[], bool]
    flush: Callable[[], object]
    close: Callable[[], None]
    dropped: Callable[[], int] = lambda: 0


def _feed_ours(run: Run, *, default_batches: bool = False) -> Feeder:
    dest = _ours_destination(run.sink, default_batches=default_batches)
    _install(dest)
    token = bind_context(user_id="u_throughput", account_id="acc_1", project_id="proj_1")

    def track() -> bool:
        create_report(1)
        return True

    def close() -> None:
        reset_context(token)
        dest.shutdown(5)
        _install()

    return Feeder(
        "instrumentor SegmentTransport" + (" (its default batches)" if default_batches else ""),
        AGENT_OURS,
        "track",
        track,
        lambda: dest.flush(10),
        close,
        lambda: sum(dest.stats().dropped.values()),
    )


def _feed_segment(run: Run, n: int) -> Feeder | None:
    client = _segment_client(run.sink, max(200_000, 2 * n))
    if client is None:
        return None

    def track() -> bool:
        return bool(client.track(user_id="u_throughput", event=EVENT_NAME, properties={})[0])

    def close() -> None:
        _shutdown_segment(client, 10, run.notes, "throughput")

    return Feeder(
        "segment Client",
        AGENT_SEGMENT,
        "track",
        track,
        lambda: _bounded(client.flush, 10),
        close,
    )


def _feed_posthog(run: Run, n: int) -> Feeder | None:
    client = _posthog_client(run.sink, max(200_000, 2 * n))
    if client is None:
        return None

    def track() -> bool:
        return client.capture(EVENT_NAME, distinct_id="u_throughput", properties={}) is not None

    def close() -> None:
        _shutdown_posthog(client, 10, run.notes, "throughput")

    return Feeder(
        "posthog Posthog",
        AGENT_POSTHOG,
        "capture",
        track,
        lambda: client.flush(timeout_seconds=10),
        close,
    )


def _throughput_once(run: Run, feeder: Feeder, n: int, timeout: float) -> dict[str, Any]:
    sink = run.sink
    try:
        # Warm-up: one event delivered before the clock starts, so that the HTTP client, its
        # connection, the threads and (for instrumentor) the user's identify/group bundle
        # are not part of the timing.
        feeder.track()
        feeder.flush()
        sink.reset()
        drops = 0
        gc.collect()
        meter = CpuMeter(sink)
        started = time.perf_counter()
        for _ in range(n):
            if not feeder.track():
                drops += 1
        calls_s = time.perf_counter() - started
        got = sink.wait_count(n - drops, timeout, feeder.agent)
        elapsed = time.perf_counter() - started
        cpu = meter.shares()
        drops += feeder.dropped()
    finally:
        feeder.close()
    kinds, requests = sink.kinds(feeder.agent)
    return {
        "name": feeder.name,
        "events": n,
        "calls_s": calls_s,
        "elapsed_s": elapsed,
        "events_per_s": n / elapsed if got >= n - drops else math.nan,
        "delivered": kinds[feeder.kind],
        "requests": requests,
        "dropped": drops,
        "cpu_bench": cpu[0],
        "cpu_sink": cpu[1],
    }


def _median(values: list[float]) -> float:
    clean = sorted(v for v in values if not math.isnan(v))
    if len(clean) < len(values) or not clean:
        return math.nan
    middle = len(clean) // 2
    return clean[middle] if len(clean) % 2 else (clean[middle - 1] + clean[middle]) / 2


def section_throughput(run: Run) -> None:
    n, rounds = run.args.events, run.args.rounds
    timeout = 30.0 if run.args.quick else 90.0
    makers: list[Callable[[], Feeder | None]] = [
        lambda: _feed_ours(run),
        lambda: _feed_ours(run, default_batches=True),
        lambda: _feed_segment(run, n),
        lambda: _feed_posthog(run, n),
    ]
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(rounds):
        shift = round_ % len(makers)  # rotate the order: no library always goes first
        for make in makers[shift:] + makers[:shift]:
            run.sink.reset()
            feeder = make()
            if feeder is not None:
                runs.setdefault(feeder.name, []).append(_throughput_once(run, feeder, n, timeout))
    run.sink.reset()
    rows: list[dict[str, Any]] = []
    for name, results in runs.items():
        rates = [r["events_per_s"] for r in results]
        rows.append(
            {
                "name": name,
                "events_per_s": _median(rates),
                "rates": rates,
                "calls_s": _median([r["calls_s"] for r in results]),
                "elapsed_s": _median([r["elapsed_s"] for r in results]),
                "requests": max(r["requests"] for r in results),
                "delivered": min(r["delivered"] for r in results),
                "dropped": max(r["dropped"] for r in results),
                "cpu_bench": _median([r["cpu_bench"] for r in results]),
                "cpu_sink": _median([r["cpu_sink"] for r in results]),
                "runs": results,
            }
        )
    seg = next((r for r in rows if r["name"] == "segment Client"), None)
    print(
        f"## 3. Tuned: end-to-end throughput, one identity bound once: {n:,} events, first call"
        f" to last one accepted ({f'median of {rounds} rounds' if rounds > 1 else 'one round'})\n"
    )
    print(
        "Not the case users pay for (section 1 is): one user bound once, so after the first"
        " event each one is a lone track; instrumentor's destination tuned (linger 0.05 s)."
        " Batches of 100 everywhere, and instrumentor once more with its own default batches"
        " (SegmentTransport prefers 500 messages, within Segment's 500 KB per request; Segment's"
        " library defaults to 100). Each library first delivers one warm-up event, then the"
        " clock runs from the first call until the sink has accepted all events. `calls took`:"
        " the tracking loop alone (delivery runs meanwhile); `range`: slowest and fastest"
        " round; CPU: this process (all threads) and the sink's, over the run. GC on.\n"
    )
    table = []
    for r in rows:
        r["vs_segment"] = _div(r["events_per_s"], seg["events_per_s"]) if seg else math.nan
        rates = [x for x in r["rates"] if not math.isnan(x)]
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else "-"
        table.append(
            [
                r["name"],
                f"{r['calls_s']:.2f} s",
                f"{r['elapsed_s']:.2f} s",
                f"{r['events_per_s']:,.0f}" if not math.isnan(r["events_per_s"]) else "incomplete",
                spread,
                _ratio(r["vs_segment"]),
                f"{r['requests']:,}",
                f"{r['delivered']:,} / {n:,}",
                f"{r['dropped']:,}",
                _cpu((r["cpu_bench"], r["cpu_sink"])),
            ]
        )
    _table(
        [
            "library",
            "calls took",
            "end to end",
            "events/s",
            "range",
            "vs segment",
            "requests",
            "delivered",
            "dropped",
            "CPU bench / sink",
        ],
        table,
    )
    run.results["throughput"] = {"events": n, "rounds": rounds, "rows": rows}
    # No goal here: the goals are checked on section 1's case, which users pay for.
    for r in rows:
        if r["delivered"] != n or r["dropped"]:
            run.notes.append(
                f"throughput: {r['name']} delivered {r['delivered']:,} of {n:,} in its worst"
                f" round (dropped {r['dropped']:,})"
            )


# --- 4. Accoil: one request per message, max_in_flight ----------------------------------------


def _accoil_once(run: Run, in_flight: int, n: int, latency: float) -> dict[str, Any]:
    sink = run.sink
    sink.reset(status=202)
    transport = AccoilTransport("bench", endpoint=sink.url, max_in_flight=in_flight)
    dest = _ours_destination(sink, transport)
    _install(dest)
    for user in ("u_warm_up_1", "u_warm_up_2"):  # two users: the thread pool is used too
        with bound_context(user_id=user, account_id="acc_1", project_id="proj_1"):
            create_report(0)
    dest.flush(10)  # warm-up delivered: the client, its connections and threads exist
    users = [f"u_{in_flight}_{j}" for j in range(USERS)]
    # At most: Accoil's identify links a user to the account, so a user's account group call
    # goes once per account, not once per user (the bundle sends fewer than run.extras).
    most = n + len(users) * run.extras
    sink.reset(status=202)
    if latency > 0:
        sink.delay_next(most, latency)
    timeout = 30.0 + most * latency
    gc.collect()
    meter = CpuMeter(sink)
    started = time.perf_counter()
    for i in range(n):
        with bound_context(user_id=users[i % USERS], account_id="acc_1", project_id="proj_1"):
            create_report(1)
    flushed = dest.flush(timeout)  # returns once the sink has answered every message
    elapsed = time.perf_counter() - started
    cpu_bench, cpu_sink = meter.shares()
    stats = dest.stats()
    dest.shutdown(5)
    _install()
    kinds, requests = sink.kinds(AGENT_OURS)
    complete = flushed.pending == 0 and kinds["track"] >= n
    return {
        "max_in_flight": in_flight,
        "latency_s": latency,
        "events": n,
        "messages": sum(kinds.values()),
        "requests": requests,
        "tracks": kinds["track"],
        "elapsed_s": elapsed,
        "rps": requests / elapsed if complete else math.nan,
        "dropped": sum(stats.dropped.values()),
        "retried": stats.retried,
        "cpu_bench": cpu_bench,
        "cpu_sink": cpu_sink,
    }


def section_accoil(run: Run) -> None:
    quick = run.args.quick
    variants = [
        ("loopback", run.args.accoil_events, 0.0),
        ("10 ms added per request", 100 if quick else 500, 0.010),
    ]
    results: dict[str, list[dict[str, Any]]] = {}
    print(f"## 4. AccoilTransport: {USERS} users, one request per message (status 202)\n")
    print(
        "Destination batches of 100 messages (about 64 users each) are split into one sequence"
        " per user; up to `max_in_flight` sequences run at once on pooled keep-alive"
        " connections. Requests = events + each new user's identify and group calls (the"
        " account's group call goes once per account: Accoil's identify links the user to it)."
        " The clock stops when `flush()` returns, every message answered. With `10 ms added`,"
        " the sink holds each answer 10 ms (a network round trip).\n"
    )
    for label, n, latency in variants:
        rows = [_accoil_once(run, k, n, latency) for k in (1, 4, 8, 16)]
        base = rows[0]["rps"]
        table = []
        for r in rows:
            r["vs_one"] = _div(r["rps"], base)
            table.append(
                [
                    str(r["max_in_flight"]),
                    f"{r['requests']:,}",
                    f"{r['tracks']:,} / {n:,}",
                    f"{r['elapsed_s']:.2f} s",
                    f"{r['rps']:,.0f}" if not math.isnan(r["rps"]) else "incomplete",
                    _ratio(r["vs_one"]),
                    f"{r['retried']:,}",
                    _cpu((r["cpu_bench"], r["cpu_sink"])),
                ]
            )
            if r["tracks"] != n:
                run.notes.append(
                    f"accoil ({label}, max_in_flight={r['max_in_flight']}): {r['tracks']:,} of"
                    f" {n:,} tracks delivered"
                )
        print(f"{label}, {n:,} events:\n")
        _table(
            [
                "max_in_flight",
                "requests",
                "tracks",
                "end to end",
                "requests/s",
                "vs 1",
                "retried",
                "CPU bench / sink",
            ],
            table,
        )
        results[label] = rows
    run.sink.reset()
    run.results["accoil"] = {"users": USERS, "variants": results}


# --- 5. memory per queued event, sink paused ---------------------------------------------------


@dataclass
class MemoryContender:
    name: str
    emit: Callable[[int], None]
    queued: Callable[[], int]
    close: Callable[[], None]


def _memory_ours(run: Run, per_event_context: bool) -> MemoryContender:
    dest = _ours_destination(run.sink)
    _install(dest)
    token = bind_context(user_id="u_memory", account_id="acc_1", project_id="proj_1")

    def emit(n: int) -> None:
        if per_event_context:  # a new context per event, as a web app binds per request
            for _ in range(n):
                with bound_context(user_id="u_memory"):  # same ids, a new context object
                    create_report(1)
        else:
            for _ in range(n):
                create_report(1)

    def close() -> None:
        reset_context(token)
        run.sink.resume()
        result = dest.shutdown(20)
        if result.pending:
            run.notes.append(f"memory: instrumentor left {result.pending:,} pending at shutdown")
        _install()

    name = "instrumentor, context per event" if per_event_context else "instrumentor, one context"
    return MemoryContender(name, emit, lambda: dest.stats().queue_depth, close)


def _memory_segment(run: Run) -> MemoryContender | None:
    client = _segment_client(run.sink, 1_000_000)
    if client is None:
        return None

    def emit(n: int) -> None:
        for _ in range(n):
            client.track(user_id="u_memory", event=EVENT_NAME, properties={})

    def close() -> None:
        run.sink.resume()
        _shutdown_segment(client, 30, run.notes, "memory")

    return MemoryContender("segment Client", emit, client.queue.qsize, close)


def _memory_posthog(run: Run) -> MemoryContender | None:
    client = _posthog_client(run.sink, 1_000_000)
    if client is None:
        return None

    def emit(n: int) -> None:
        for _ in range(n):
            client.capture(EVENT_NAME, distinct_id="u_memory", properties={})

    def close() -> None:
        run.sink.resume()
        _shutdown_posthog(client, 30, run.notes, "memory")

    return MemoryContender("posthog Posthog", emit, lambda: _posthog_queued(client), close)


def section_memory(run: Run) -> None:
    n, sink = run.args.memory_events, run.sink
    makers: list[Callable[[], MemoryContender | None]] = [
        lambda: _memory_ours(run, False),
        lambda: _memory_ours(run, True),
        lambda: _memory_segment(run),
        lambda: _memory_posthog(run),
    ]
    rows: list[dict[str, Any]] = []
    for make in makers:
        sink.reset()
        sink.pause()  # every request is held: nothing is delivered
        contender = make()
        if contender is None:
            continue
        try:
            contender.emit(200)  # the consumer takes a first batch and blocks on the sink
            time.sleep(0.3)
            gc.collect()
            before_queued = contender.queued()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            contender.emit(n)
            time.sleep(0.2)
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            queued = contender.queued() - before_queued
        finally:
            contender.close()
        rows.append(
            {
                "name": contender.name,
                "events": n,
                "queued": queued,
                "traced_bytes": traced,
                "bytes_per_event": traced / n,
            }
        )
    sink.reset()
    seg = next((r for r in rows if r["name"] == "segment Client"), None)
    print(f"## 5. Tuned: memory per queued event, one identity: {n:,} events, sink paused\n")
    print(
        "Not the case users pay for (section 1 is): one user and account for every event."
        " tracemalloc's growth while queuing (the sink holds every request, so each consumer"
        " keeps one batch in flight and the rest waits in its queue), after gc.collect().\n"
    )
    table = []
    for r in rows:
        r["vs_segment"] = _div(r["bytes_per_event"], seg["bytes_per_event"]) if seg else math.nan
        table.append(
            [
                r["name"],
                f"{r['queued']:,}",
                f"{r['traced_bytes'] / 1e6:.2f} MB",
                f"{r['bytes_per_event']:,.0f} B",
                _ratio(r["vs_segment"]),
            ]
        )
    _table(["library", "queued", "traced growth", "per event", "vs segment"], table)
    run.results["memory"] = {"events": n, "rows": rows}
    # No goal here: the goals are checked on section 1's case, which users pay for.
    for r in rows:
        if r["queued"] < n * 0.99:
            run.notes.append(f"memory: {r['name']} queued only {r['queued']:,} of {n:,} events")


# --- 6. an outage while tracking at a steady rate --------------------------------------------


def _window_stats(latencies: list[int]) -> dict[str, float]:
    values = [float(v) for v in latencies]
    return {
        "calls": len(values),
        "p50_ns": percentile(values, 50),
        "p99_ns": percentile(values, 99),
        "max_ns": max(values) if values else math.nan,
    }


def section_outage(run: Run) -> None:
    args, sink = run.args, run.sink
    sink.reset()
    outage, rate = args.outage, args.rate
    outage_at = 0.5 if args.quick else 1.0
    duration = outage_at + outage + 1.0
    retry = RetryPolicy(max_attempts=10_000, max_elapsed=300.0, base_delay=0.1, max_delay=1.0)
    dest = _ours_destination(
        sink, SegmentTransport("bench", endpoint=sink.url, timeout=5.0), retry=retry
    )
    _install(dest)
    emissions: list[Emission] = []

    def collect(sender: object, *, emission: Emission) -> None:
        # The very emissions the destination queues: their messages (built once, cached) are
        # the objects it sends, so their ids are the ids sent. Unlike an inline
        # MemoryTransport, this does not build the messages on the caller's thread.
        emissions.append(emission)

    event_emitted.connect(collect, weak=False)
    clock = time.perf_counter_ns
    window: dict[str, int] = {}

    def make_outage() -> None:
        window["requested"] = clock()
        sink.refuse_for(outage)
        window["start"] = clock()
        sink.wait_listening(outage + 10)
        window["end"] = clock()
        window["backlog"] = dest.stats().queue_depth
        deadline = time.monotonic() + 60
        while dest.stats().queue_depth >= dest.batch_size and time.monotonic() < deadline:
            time.sleep(0.005)
        window["drained"] = clock()

    n = int(rate * duration)
    latencies = [0] * n
    starts = [0] * n
    timer = threading.Timer(outage_at, make_outage)
    timer.daemon = True
    with bound_context(user_id="u_outage", account_id="acc_1", project_id="proj_1"):
        create_report(0)  # the bundle (identify + groups) goes out before the outage
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            timer.start()
            for i in range(n):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                start = clock()
                create_report(1)
                latencies[i] = clock() - start
                starts[i] = start
        finally:
            gc.enable()
        loop_s = time.perf_counter() - t0
    timer.join(outage + 70)
    sent = [m.message_id for e in emissions for m in e.messages]
    got = sink.wait_count(len(sent), 60, AGENT_OURS)
    done = clock()
    dest.flush(10)
    stats = dest.stats()
    received = sink.message_ids()
    event_emitted.disconnect(collect)
    dest.shutdown(5)
    _install()

    start, end = window.get("start", 0), window.get("end", 0)
    timed = list(zip(latencies, starts, strict=True))
    before = [lat for lat, s in timed if s < window.get("requested", 0)]
    during = [lat for lat, s in timed if start <= s < end]
    after = [lat for lat, s in timed if s >= end]
    sent_set, received_set = set(sent), set(received)
    result = {
        "rate": rate,
        "outage_s": outage,
        "measured_outage_s": (end - start) / 1e9,
        "loop_s": loop_s,
        "tracked": n + 1,
        "sent_messages": len(sent),
        "received_messages": len(received),
        "delivered_total": got,
        "lost": len(sent_set - received_set),
        "duplicated": len(received) - len(received_set),
        "unexpected": len(received_set - sent_set),
        "retried": stats.retried,
        "failed": stats.failed,
        "dropped": dict(stats.dropped),
        "backlog_at_recovery": window.get("backlog", -1),
        "drain_s": (window.get("drained", end) - end) / 1e9,
        "all_delivered_after_recovery_s": (done - end) / 1e9,
        "windows": {
            "before": _window_stats(before),
            "during outage": _window_stats(during),
            "after recovery": _window_stats(after),
        },
    }
    run.results["outage"] = result
    print(
        f"## 6. A {outage:g} s outage (connections refused) while tracking {rate:,} events/s"
        f" for {duration:g} s\n"
    )
    print(
        "Per-call time of `@tracks` with a SegmentTransport destination (retry: backoff 0.1 s"
        " doubling to at most 1 s), each call timed alone, GC off.\n"
    )
    table = []
    for name, w in result["windows"].items():
        table.append(
            [name, f"{w['calls']:,}", _us(w["p50_ns"]), _us(w["p99_ns"]), _us(w["max_ns"])]
        )
    _table(["window", "calls", "p50", "p99", "max"], table)
    _table(
        [
            "messages sent",
            "received",
            "lost",
            "duplicated",
            "unexpected",
            "retried",
            "backlog at recovery",
            "drained in",
            "all delivered",
        ],
        [
            [
                f"{len(sent):,}",
                f"{len(received):,}",
                f"{result['lost']:,}",
                f"{result['duplicated']:,}",
                f"{result['unexpected']:,}",
                f"{stats.retried:,}",
                f"{result['backlog_at_recovery']:,}",
                f"{result['drain_s']:.2f} s",
                f"{result['all_delivered_after_recovery_s']:.2f} s after recovery",
            ]
        ],
        align="rrrrrrrrr",
    )
    p99, worst = (result["windows"]["during outage"][k] for k in ("p99_ns", "max_ns"))
    run.checks.append(
        (
            f"outage: caller p99 during the outage <= {TARGET_OUTAGE_P99_NS / 1000:g} µs "
            f"(is {p99 / 1000:.2f} µs; max {worst / 1000:.0f} µs)",
            p99 <= TARGET_OUTAGE_P99_NS,
        )
    )
    run.checks.append(
        (
            f"outage: every message delivered exactly once (lost {result['lost']}, duplicated "
            f"{result['duplicated']}, unexpected {result['unexpected']})",
            result["lost"] == 0 and result["duplicated"] == 0 and result["unexpected"] == 0,
        )
    )
    if not during:
        run.notes.append("outage: no call fell inside the measured outage window")


# --- 7. SegmentTransport.deliver alone ---------------------------------------------------------

TRANSPORT_EVENTS = 1000  # new users, each an identify, three group calls and a track


def _bundles() -> list[Any]:
    """The messages of TRANSPORT_EVENTS events of new users, with traits and properties."""
    memory = MemoryTransport()
    configure(transports=[memory])
    for n in range(TRANSPORT_EVENTS):
        user, account, workspace, project = _identity()
        with bound_context(
            user_id=user,
            user_traits={"email": f"{user}@example.com", "plan": "pro"},
            account_id=account,
            account_name=f"Account {n}",
            workspace_id=workspace,
            project_id=project,
        ):
            instrumentor.track(Events.REPORT_CREATED, properties={"size": n, "format": "pdf"})
    instrumentor.reset_configuration()
    return list(memory.messages)


def section_transport(run: Run) -> None:
    """The worker's cost in ``SegmentTransport.deliver``: writing, encoding and one POST per
    100 messages, to an ``httpx.MockTransport`` that answers 200 at once (no network)."""
    messages = _bundles()
    batches = [messages[i : i + REAL_BATCH] for i in range(0, len(messages), REAL_BATCH)]
    per_event = len(messages) / TRANSPORT_EVENTS
    ok = httpx.Response(200)
    mock = httpx.MockTransport(lambda request: ok)
    repeat = 3 if run.args.quick else 9
    rows: list[dict[str, Any]] = []
    for attribution in ("none", "posthog"):
        transport = SegmentTransport("bench", http_transport=mock, group_attribution=attribution)
        for batch in batches[:3]:  # warm-up: the client exists
            transport.deliver(batch)
        best = math.inf
        for _ in range(repeat):
            gc.collect()
            started = time.process_time()
            for batch in batches:
                transport.deliver(batch)
            best = min(best, time.process_time() - started)
        transport.close()
        rows.append({"attribution": attribution, "us_per_message": best / len(messages) * 1e6})
    client = httpx.Client(transport=mock)
    body = b'{"batch":[' + b",".join([b'{"k":"' + b"x" * 250 + b'"}'] * REAL_BATCH) + b"]}"
    best = math.inf
    for _ in range(repeat):
        started = time.process_time()
        for _ in batches:
            client.post("http://sink/v1/batch", content=body)
        best = min(best, time.process_time() - started)
    client.close()
    post = best / len(messages) * 1e6
    print(
        f"## 7. SegmentTransport.deliver alone: {len(messages):,} messages, {REAL_BATCH} a batch\n"
    )
    print(
        f"{TRANSPORT_EVENTS:,} events of new users ({per_event:g} messages each: identify with"
        " traits, a group call per level, the track with properties), delivered in batches of"
        f" {REAL_BATCH} to an `httpx.MockTransport` answering 200 at once: the worker's CPU in"
        f" the transport, best of {repeat}. `the POST alone`: the same client posting a body of"
        " the same size, for scale.\n"
    )
    table = [
        [
            f"`group_attribution={r['attribution']!r}`",
            f"{r['us_per_message']:.2f} µs",
            f"{r['us_per_message'] * per_event:.1f} µs",
            f"{post:.2f} µs",
        ]
        for r in rows
    ]
    _table(["transport", "CPU / message", "CPU / event", "the POST alone / message"], table)
    run.results["transport"] = {"per_event": per_event, "post_us": post, "rows": rows}


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 s outage (smoke)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run this section")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--sink", choices=("process", "thread"), default="process")
    parser.add_argument("--samples", type=int, help="caller: timed batches per row (1000)")
    parser.add_argument("--batch", type=int, help="caller: calls per timed batch (50)")
    parser.add_argument("--real-events", type=int, help="realistic: requests per library (10000)")
    parser.add_argument(
        "--real-memory-events", type=int, help="realistic: requests queued, memory (20000)"
    )
    parser.add_argument("--events", type=int, help="throughput: events per library (50000)")
    parser.add_argument("--rounds", type=int, help="throughput: rounds, median reported (3)")
    parser.add_argument("--accoil-events", type=int, help="accoil: events per setting (5000)")
    parser.add_argument("--memory-events", type=int, help="memory: events queued (20000)")
    parser.add_argument("--outage", type=float, help="outage: seconds refused (10)")
    parser.add_argument("--rate", type=int, default=2000, help="outage: events per second")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "samples": (100, 1000),
        "batch": (20, 50),
        "real_events": (2000, 10_000),
        "real_memory_events": (2000, 20_000),
        "events": (5000, 50_000),
        "rounds": (1, 3),
        "accoil_events": (500, 5000),
        "memory_events": (2000, 20_000),
        "outage": (2.0, 10.0),
    }
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    sections = args.only or list(SECTIONS)
    for name in ("segment", "posthog", "instrumentor", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # retries are expected here

    py = f"{sys.version.split()[0]} ({platform.python_implementation()})"
    print(f"Python {py} on {platform.platform()}, instrumentor {instrumentor.__version__}")
    versions = []
    for label, module in (("segment-analytics-python", "segment.analytics.version"),):
        mod = _optional(module)
        versions.append(f"{label} {getattr(mod, 'VERSION', 'not installed')}")
    ph_version = _optional("posthog.version")
    versions.append(f"posthog {getattr(ph_version, 'VERSION', 'not installed')}")
    started = time.perf_counter()
    notes: list[str] = []
    sink: Sink
    try:
        sink = ProcessSink() if args.sink == "process" else ThreadSink()
    except (OSError, EOFError, RuntimeError) as exc:
        notes.append(f"the sink process did not start ({exc}): the sink runs in-process")
        sink = ThreadSink()
    print(f"{', '.join(versions)}; sink: FaultServer {sink.where}\n")
    run = Run(args=args, sink=sink, notes=notes)
    try:
        run.extras = bundle_extras()
        run.real_per_event = realistic_per_event()
        runners: dict[str, Callable[[Run], None]] = {
            "realistic": section_realistic,
            "caller": section_caller,
            "throughput": section_throughput,
            "accoil": section_accoil,
            "memory": section_memory,
            "outage": section_outage,
            "transport": section_transport,
        }
        for name in SECTIONS:
            if name in sections:
                try:
                    runners[name](run)
                except Exception as exc:  # report and go on: the figures are informational
                    run.notes.append(f"{name}: failed with {type(exc).__name__}: {exc}")
                    print(f"(section {name} failed: {type(exc).__name__}: {exc})\n")
                sys.stdout.flush()
    finally:
        sink.close()
    total = time.perf_counter() - started
    print(f"Targets (informational: this script always exits 0); total time {total:.0f} s:")
    for text, met in run.checks:
        print(f"- {'PASS' if met else 'MISS'}: {text}")
    for note in run.notes:
        print(f"- note: {note}")
    if args.json:
        meta = {"python": sys.version, "platform": platform.platform(), "sink": args.sink}
        result = meta | {"versions": versions, "results": run.results}
        result |= {"targets": dict(run.checks), "notes": run.notes, "total_s": total}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2, default=str)
    return 0  # figures are for humans: a miss never fails CI


if __name__ == "__main__":
    sys.exit(main())
