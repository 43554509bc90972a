"""Delivery across process boundaries: exit, fork, and a real gunicorn --preload server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def run_script(code: str, server: FaultServer, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**clean, "SINK_URL": server.url, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


TRACK_AND_EXIT = """
    import os
    import instrumentor
    from instrumentor import SegmentTransport, bind_context, track
    from tests.plan import Events
    instrumentor.configure(transports=[SegmentTransport("k", endpoint=os.environ["SINK_URL"])])
    bind_context(user_id="u_exit", account_id="acc_1")
    track(Events.PLAN_UPGRADED)
    # no flush, no shutdown: the exit hook must deliver it
"""


def test_a_script_that_tracks_and_exits_delivers(server: FaultServer) -> None:
    """The bounded flush at interpreter exit delivers what was queued."""
    result = run_script(TRACK_AND_EXIT, server)
    assert result.returncode == 0, result.stderr
    assert len(server.message_ids()) == 3
    tracks = [m for r in server.received() for m in r.json["batch"] if m["type"] == "track"]
    assert [t["userId"] for t in tracks] == ["u_exit"]


def test_exit_is_bounded_when_the_provider_hangs(server: FaultServer) -> None:
    """With a sink that never answers, the process still exits within the exit timeout."""
    server.pause()
    started = time.monotonic()
    result = run_script(TRACK_AND_EXIT, server, ANALYTICS_EXIT_TIMEOUT="0.5")
    elapsed = time.monotonic() - started
    server.resume()
    assert result.returncode == 0, result.stderr
    assert elapsed < 10  # interpreter start-up included; an unbounded flush would hang here


FORK = """
    import os
    import instrumentor
    from instrumentor import SegmentTransport, bind_context, track
    from tests.plan import Events
    instrumentor.configure(transports=[SegmentTransport("k", endpoint=os.environ["SINK_URL"])])
    bind_context(user_id="parent", account_id="acc_1")
    track(Events.PLAN_UPGRADED)  # the parent's worker thread and HTTP client exist now
    pid = os.fork()
    if pid == 0:
        bind_context(user_id="child")
        track(Events.PLAN_UPGRADED)
        result = instrumentor.flush(10)
        os._exit(0 if result.pending == 0 and result.delivered >= 1 else 3)
    _, status = os.waitpid(pid, 0)
    track(Events.PLAN_UPGRADED)
    assert instrumentor.flush(10).pending == 0
    print("child exit", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_delivers_its_own_events(server: FaultServer) -> None:
    """After fork the child gets its own queue, worker and client, and delivers."""
    result = run_script(FORK, server)
    assert result.returncode == 0, result.stderr
    assert "child exit 0" in result.stdout
    tracks = [m for r in server.received() for m in r.json["batch"] if m["type"] == "track"]
    assert sorted(t["userId"] for t in tracks) == ["child", "parent", "parent"]
    assert len(server.message_ids()) == len(set(server.message_ids()))


def tracks_received(server: FaultServer) -> list[dict[str, object]]:
    return [m for r in server.received() for m in r.json["batch"] if m["type"] == "track"]


def wait_for_tracks(server: FaultServer, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(tracks_received(server)) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_gunicorn_preload_workers_each_deliver(server: FaultServer) -> None:
    """A real gunicorn --preload app with two workers: every request's event arrives."""
    pytest.importorskip("gunicorn")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10",
            "tests.delivery.gunicorn_app:app",
        ],
        cwd=ROOT,
        env={**clean, "SINK_URL": server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    served: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for the server to listen
            try:
                served.append(int(httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0).text))
                break
            except httpx.TransportError:
                time.sleep(0.1)
        for _ in range(40):
            response = httpx.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"})
            served.append(int(response.text))
        wait_for_tracks(server, len(served) + 1, timeout=20)  # every request's, and the master's
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    tracks = [m for r in server.received() for m in r.json["batch"] if m["type"] == "track"]
    pids = [t["properties"]["pid"] for t in tracks if "pid" in t.get("properties", {})]
    assert len(set(served)) == 2, f"one worker served everything: {set(served)}\n{stderr}"
    assert sorted(pids) == sorted(served), stderr  # every request's event, once, by its worker
    assert [t["userId"] for t in tracks].count("master") == 1
    assert len(server.message_ids()) == len(set(server.message_ids()))
