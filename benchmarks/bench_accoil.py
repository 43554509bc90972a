"""Requests/s of ``AccoilTransport`` next to a bare ``httpx.Client.post`` loop, on a loopback sink.

The sink is a child process (``--serve``): an asyncio protocol that parses just enough HTTP/1.1
(the head, ``Content-Length``, the body) to answer ``202 {}`` on keep-alive connections,
optionally ``--latency-ms`` later (a timer per request, as a network round trip would add). It
counts requests, body bytes and its own CPU time, read over a ``GET /stats`` that is not counted.
Its capacity is measured first, alone, with a raw-socket client (pre-built requests, one
connection): it has to be far above every other row, or the sink would be what is measured.

Every contender sends the same requests: batches of ``--batch`` messages (Accoil's default batch
size, 100) for ``--users`` users in turn (64: a batch holds two messages of 36 users and one of
28), every 10th message an identify with traits and the others tracks. The bare loop posts
the very bodies, paths and headers (``Authorization``, ``Idempotency-Key``) the transport sends,
pre-encoded, from one thread through one ``httpx.Client`` with the transport's pool limits; the
transport gets the messages and does everything itself (bodies, per-user order, concurrency).

Rows, loopback: the sink alone; the bare loop; ``AccoilTransport(max_in_flight=1)`` (one thread,
like for like); ``AccoilTransport()`` (its default, 8 in flight). Then with ``--latency-ms``
added by the sink (10 by default): the transport with 1 and with 16 in flight. Each row is timed
``--rounds`` times, rows interleaved (the order rotating every round) after a warm-up that opens
the connections and starts the threads; the median is reported. ``client CPU`` is this process's
CPU time (all threads) per request, ``sink CPU`` the sink's CPU time over the wall time, ``body``
the mean body size the sink received.

With 16 in flight a batch of 100 takes at least 7 rounds of requests (ceil(100 / 16); no user's
two messages overlap), so 16 in flight can reach at most 100 / 7 = 14.3x the 1-in-flight rate.

Prints the Python version, the platform, Markdown tables and the goals with PASS/MISS; always
exits 0.

    python benchmarks/bench_accoil.py [--quick] [--requests 3000] [--rounds 5]
        [--latency-ms 10] [--latency-requests 300] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import json
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from instrumentor import __version__  # noqa: E402
from instrumentor._messages import IdentifyMessage, Message, TrackMessage  # noqa: E402
from instrumentor.exceptions import PartialDeliveryError  # noqa: E402
from instrumentor.transports import AccoilTransport  # noqa: E402

KEY = "bench_key_0123456789"
GOAL_VS_BARE = 0.9  # default transport (8 in flight) >= 0.9x the bare loop, loopback
GOAL_SCALING = 12.0  # 16 in flight >= 12x 1 in flight, 10 ms added per request
RESPONSE = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
STATS_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


# --- the sink (child process) ------------------------------------------------------------------


#: What the sink received (one process, one event loop: no lock needed).
COUNTS = {"requests": 0, "body_bytes": 0}


class _SinkProtocol(asyncio.Protocol):
    """One keep-alive connection: answers each request 202, after ``latency`` seconds if set."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            at = head.find(b"\r\ncontent-length:")
            length = int(head[at + 17 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            self.answer(head, length)
        self.buffer = buffer

    def answer(self, head: bytes, length: int) -> None:
        assert self.transport is not None
        if head.startswith(b"get /stats"):
            stats = dict(COUNTS, cpu_s=time.process_time())
            body = json.dumps(stats).encode()
            self.transport.write(STATS_HEAD % len(body) + body)
            return
        COUNTS["requests"] += 1
        COUNTS["body_bytes"] += length
        if self.latency:
            asyncio.get_running_loop().call_later(self.latency, self.transport.write, RESPONSE)
        else:
            self.transport.write(RESPONSE)


async def _serve(latency: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _SinkProtocol(latency), "127.0.0.1", 0, backlog=128)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


class Sink:
    """A sink child process (``--serve``) and what the benchmark asks of it."""

    def __init__(self, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        command = [sys.executable, __file__, "--serve", "--latency-ms", str(latency_ms)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, float]:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall(b"GET /stats HTTP/1.1\r\nHost: sink\r\n\r\n")
            data = b""
            while b"}" not in data:
                data += sock.recv(4096)
        stats: dict[str, float] = json.loads(data.split(b"\r\n\r\n", 1)[1])
        return stats

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


# --- the workload -------------------------------------------------------------------------------


def messages(total: int, users: int) -> list[Message]:
    """``total`` messages for ``users`` users in turn: every 10th an identify, else a track."""
    now = _dt.datetime.now(_dt.timezone.utc)
    made: list[Message] = []
    for i in range(total):
        user = f"usr_{i % users:04d}"
        if i % 10 == 9:
            traits = {"email": f"{user}@example.com", "plan": "pro", "seats": 12}
            made.append(IdentifyMessage(user, "acc_0001", traits, now))
        else:
            made.append(
                TrackMessage(user, "Report_Created", "ws_0001", "workspace", "core", {}, now)
            )
    return made


def _iso(ts: _dt.datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wire(message: Message) -> tuple[str, bytes]:
    """The path and body Accoil's v2 API documents for ``message`` (what the transport sends)."""
    if isinstance(message, TrackMessage):
        body: dict[str, Any] = {"userId": message.user_id, "event": message.event}
        path = "/v2/track"
    else:
        assert isinstance(message, IdentifyMessage)
        body = {"userId": message.user_id, "groupId": message.group_id}
        body["traits"] = dict(message.traits)
        path = "/v2/identify"
    body["timestamp"] = _iso(message.timestamp)
    return path, json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# --- contenders ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One contender: ``run(n)`` sends ``n`` requests and returns how many were accepted."""

    label: str
    sink: Sink
    run: Callable[[int], int]
    close: Callable[[], None]
    n: int = 0  # requests per round
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    sink_cpu: list[float] = field(default_factory=list)
    body_bytes: list[float] = field(default_factory=list)
    lost: int = 0

    @property
    def rps(self) -> float:
        """Requests per second, the median round's."""
        return self.n / statistics.median(self.seconds)


def raw_socket_row(sink: Sink) -> Row:
    """The sink alone: pre-built requests on one raw keep-alive socket, nothing parsed."""
    sock = socket.create_connection(("127.0.0.1", sink.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _, body = wire(messages(1, 1)[0])
    request = (
        b"POST /v2/track HTTP/1.1\r\nHost: sink\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    def run(n: int) -> int:
        for _ in range(n):
            sock.sendall(request)
            if not sock.recv(4096).startswith(b"HTTP/1.1 202"):
                return 0
        return n

    return Row("sink alone: raw socket, 1 connection", sink, run, sock.close)


def bare_row(sink: Sink, pool: list[Message]) -> Row:
    """A plain ``httpx.Client.post`` loop on one thread, with the transport's pool limits."""
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    headers = {
        "User-Agent": f"instrumentor/{__version__}",
        "Content-Type": "application/json",
        "Authorization": f"Basic {KEY}",
    }
    client = httpx.Client(headers=headers, limits=limits, timeout=10.0)
    requests = [(sink.url + path, body, m.message_id) for m in pool for path, body in [wire(m)]]

    def run(n: int) -> int:
        accepted = 0
        for url, body, message_id in requests[:n]:
            response = client.post(url, content=body, headers={"Idempotency-Key": message_id})
            accepted += response.status_code == 202
        return accepted

    return Row("bare `httpx.Client.post` loop, 1 thread", sink, run, client.close)


def transport_row(sink: Sink, pool: list[Message], batch: int, in_flight: int | None) -> Row:
    """``AccoilTransport.deliver`` for batches of ``batch`` messages."""
    if in_flight is None:
        transport = AccoilTransport(KEY, endpoint=sink.url)
        label = "`AccoilTransport()`: its default, 8 in flight"
    else:
        transport = AccoilTransport(KEY, endpoint=sink.url, max_in_flight=in_flight)
        label = f"`AccoilTransport(max_in_flight={in_flight})`"

    def run(n: int) -> int:
        accepted = 0
        for start in range(0, n, batch):
            chunk = pool[start : min(start + batch, n)]
            try:
                transport.deliver(chunk)
                accepted += len(chunk)
            except PartialDeliveryError as exc:
                accepted += len(chunk) - len(exc.retry) - len(exc.failed)
        return accepted

    return Row(label, sink, run, transport.close)


# --- measuring ----------------------------------------------------------------------------------


def sample(row: Row) -> None:
    """Time one round of ``row.n`` requests."""
    gc.collect()
    before = row.sink.stats()
    cpu = time.process_time()
    started = time.perf_counter()
    accepted = row.run(row.n)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    after = row.sink.stats()
    row.lost += row.n - accepted
    row.seconds.append(elapsed)
    row.cpu.append(cpu / row.n)
    row.sink_cpu.append((after["cpu_s"] - before["cpu_s"]) / elapsed)
    row.body_bytes.append((after["body_bytes"] - before["body_bytes"]) / row.n)


def measure(rows: list[Row], rounds: int, warm_up: int) -> None:
    """Warm every row up, then time ``rounds`` rounds, the order rotating every round."""
    for row in rows:
        row.run(warm_up)
    for r in range(rounds):
        for row in rows[r % len(rows) :] + rows[: r % len(rows)]:
            sample(row)


def table(rows: list[Row], base: Row, versus: str) -> None:
    """The rows as Markdown, each with its ratio to ``base`` (column ``versus``)."""
    header = ["row", "requests", "requests/s", versus, "client CPU"]
    print("| " + " | ".join([*header, "sink CPU", "body"]) + " |")
    print("|---|" + "---:|" * (len(header) + 1))
    for row in rows:
        cells = [
            row.label,
            f"{row.n:,}",
            f"{row.rps:,.0f}",
            f"{row.rps / base.rps:.2f}x",
            f"{statistics.median(row.cpu) * 1e6:,.0f} µs/request",
            f"{statistics.median(row.sink_cpu):.0%}",
            f"{statistics.median(row.body_bytes):.1f} B",
        ]
        print("| " + " | ".join(cells) + " |")
    print()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--requests", type=int, help="requests per loopback round (3000)")
    parser.add_argument("--rounds", type=int, help="rounds per row (5)")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="added per request (10)")
    parser.add_argument(
        "--latency-requests", type=int, help="requests per 1-in-flight round (300; 16: 8x)"
    )
    parser.add_argument("--users", type=int, default=64, help="users the messages are for (64)")
    parser.add_argument("--batch", type=int, default=100, help="messages per deliver() (100)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.serve:
        asyncio.run(_serve(args.latency_ms / 1000))
        return
    n = args.requests or (600 if args.quick else 3000)
    rounds = args.rounds or (2 if args.quick else 5)
    slow_n = args.latency_requests or (100 if args.quick else 300)
    print(f"Python {platform.python_version()} on {platform.platform()}, httpx {httpx.__version__}")
    print(f"Batches of {args.batch} messages for {args.users} users; median of {rounds} rounds.\n")
    sinks = [Sink(0.0), Sink(args.latency_ms)]
    try:
        fast, slow = sinks
        pool = messages(max(n, 8 * slow_n) + args.batch, args.users)
        loopback = [
            raw_socket_row(fast),
            bare_row(fast, pool),
            transport_row(fast, pool, args.batch, 1),
            transport_row(fast, pool, args.batch, None),
        ]
        for row in loopback:
            row.n = n
        latency = [
            transport_row(slow, pool, args.batch, 1),
            transport_row(slow, pool, args.batch, 16),
        ]
        latency[0].n, latency[1].n = slow_n, 8 * slow_n
        measure(loopback, rounds, warm_up=args.batch)
        measure(latency, rounds, warm_up=args.batch)
        report(args, loopback, latency)
        for row in loopback + latency:
            row.close()
    finally:
        for sink in sinks:
            sink.close()


def report(args: argparse.Namespace, loopback: list[Row], latency: list[Row]) -> None:
    """Print the tables and the goals; write the JSON file if asked."""
    print("## Loopback\n")
    table(loopback, loopback[1], "vs bare loop")
    print(f"## {args.latency_ms:g} ms added per request by the sink\n")
    table(latency, latency[0], "vs 1 in flight")
    bare, one, default = (row.rps for row in loopback[1:])
    scaling = latency[1].rps / latency[0].rps
    goals = [
        (f"default transport (8 in flight) >= {GOAL_VS_BARE}x the bare loop", default / bare),
        (f"16 in flight >= {GOAL_SCALING:g}x 1 in flight, {args.latency_ms:g} ms added", scaling),
    ]
    print(f"Like for like (one thread each): the transport at {one / bare:.2f}x the bare loop.\n")
    print("## Goals\n")
    for (text, value), goal in zip(goals, (GOAL_VS_BARE, GOAL_SCALING), strict=True):
        print(f"- {'PASS' if value >= goal else 'MISS'} {text}: {value:.2f}x")
    for row in loopback + latency:
        if row.lost:
            print(f"- note: {row.label}: {row.lost:,} requests not accepted")
    if args.json:
        rows = {
            row.label: {"requests": row.n, "rps": row.rps, "cpu_s": statistics.median(row.cpu)}
            for row in loopback + latency
        }
        results = {"rows": rows, "goals": dict(goals), "rounds": len(loopback[0].seconds)}
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # a benchmark never fails the build
        print(f"benchmark error: {type(exc).__name__}: {exc}")
    sys.exit(0)
