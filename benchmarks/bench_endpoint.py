"""Requests/s of the frontend track endpoint next to a trivial FastAPI route, on one uvicorn.

The server runs in a child process (``--serve``): a FastAPI app with ``AnalyticsMiddleware``
serving ``POST /analytics/track`` (no rate limit; events tracked into an inline transport that
discards them, so the tracking work is counted but no delivery I/O) and a trivial
``POST /plain`` route that answers ``{"accepted": true}`` with 202. Both go through the same
middleware, which resolves the identity from a header for every request.

The client is httpx's async client with ``--concurrency`` requests in flight over keep-alive
connections, for ``--seconds`` per row; rows are interleaved for ``--rounds`` rounds and the
median is reported. Client and server share the machine (2 cores on the reference VM), so the
ratios are what to compare, not the absolute rates. Always exits 0.

    python benchmarks/bench_endpoint.py [--quick] [--seconds 3] [--rounds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

ROWS = {
    "FastAPI route `POST /plain` (trivial, 202)": ("/plain", {"event": "Search_Performed"}),
    "`POST /analytics/track`, accepted (202)": ("/analytics/track", {"event": "Bench_Clicked"}),
    "`POST /analytics/track`, unknown event (422)": (
        "/analytics/track",
        {"event": "Nothing_Happened"},
    ),
}


def serve(port: int) -> None:
    """The server side: build the app and run uvicorn on ``port`` (0: any free port)."""
    if str(ROOT) not in sys.path:  # tests/ lives at the repository root
        sys.path.insert(0, str(ROOT))
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    import instrumentor
    from instrumentor import EventRegistry, event
    from instrumentor.integrations import Identity, TrackEndpoint
    from instrumentor.integrations.asgi import AnalyticsMiddleware
    from tests.support import bind_socket

    class Events(EventRegistry):
        BENCH_CLICKED = event("Bench_Clicked", category="feature_usage", frontend=True)

    class Discard:
        inline = True

        def deliver(self, batch: Sequence[object]) -> None:
            pass

        def close(self) -> None:
            pass

    instrumentor.configure(transports=[Discard()])

    def resolve(request: Request) -> Identity | None:
        user = request.headers.get("x-user")
        return Identity(user_id=user, account_id="acc_1") if user else None

    app = FastAPI()

    @app.post("/plain")
    async def plain() -> JSONResponse:
        return JSONResponse({"accepted": True}, status_code=202)

    app.add_middleware(AnalyticsMiddleware, resolver=resolve, endpoint=TrackEndpoint(rate=None))
    sock = bind_socket("127.0.0.1", port)  # TCP_NODELAY: see its docstring
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


async def measure(
    url: str, path: str, body: dict[str, str], seconds: float, concurrency: int
) -> tuple[float, Counter[int]]:
    """Requests/s over ``seconds`` with ``concurrency`` requests in flight, and the statuses."""
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        headers = {"x-user": "usr_1"}
        await client.post(path, json=body, headers=headers)  # warm the connection
        deadline = time.perf_counter() + seconds

        async def worker() -> int:
            done = 0
            while time.perf_counter() < deadline:
                response = await client.post(path, json=body, headers=headers)
                statuses[response.status_code] += 1
                done += 1
            return done

        started = time.perf_counter()
        counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return sum(counts) / elapsed, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 s per row, 1 round")
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        rates: dict[str, list[float]] = {row: [] for row in ROWS}
        seen: dict[str, Counter[int]] = {row: Counter() for row in ROWS}
        names = list(ROWS)
        for round_ in range(args.rounds):
            for row in names[round_ % len(names) :] + names[: round_ % len(names)]:
                path, body = ROWS[row]
                rate, statuses = asyncio.run(
                    measure(url, path, body, args.seconds, args.concurrency)
                )
                rates[row].append(rate)
                seen[row].update(statuses)
    finally:
        server.terminate()
        server.wait(10)
    print(f"Python {platform.python_version()} on {platform.platform()}, {args.concurrency} in")
    print(f"flight, {args.seconds:g} s per row, median of {args.rounds} round(s)\n")
    baseline = statistics.median(rates[names[0]])
    print("| route | requests/s | vs trivial route | statuses |")
    print("|---|---:|---:|---|")
    for row in names:
        rate = statistics.median(rates[row])
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(seen[row].items()))
        print(f"| {row} | {rate:,.0f} | {rate / baseline:.2f}x | {codes} |")


if __name__ == "__main__":
    main()
