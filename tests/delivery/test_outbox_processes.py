"""The outbox across processes: kill -9 and restart, a normal exit, gunicorn workers on one file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.delivery.test_processes import free_port, tracks_received
from tests.fault_server import FaultServer
from tests.support import ROOT, connect_sqlite, run_python

BATCH = 50
LINGER = 0.01
SLACK = 2.0  # seconds of scheduling delay allowed on a loaded machine, on top of linger


TRACK_FOREVER = f"""
    import os, time
    import instrumentor
    from instrumentor.delivery import OutboxDestination
    from instrumentor.transports import MemoryTransport, SegmentTransport
    from instrumentor import bind_context, track
    from tests.plan import Events
    transport = SegmentTransport("k", endpoint=os.environ["SINK_URL"])
    memory = MemoryTransport()
    instrumentor.configure(
        transports=[memory, OutboxDestination(transport, path=os.environ["OUTBOX"],
                                              batch_size={BATCH}, linger={LINGER})]
    )
    bind_context(user_id="u_crash", account_id="acc_1")
    log = open(os.environ["TRACKED"], "w", buffering=1)
    for n in range(100_000):
        track(Events.PLAN_UPGRADED, properties={{"n": n}})
        now = time.time()
        for message in memory.messages:
            log.write(f"{{message.message_id}} {{now}}\\n")
        memory.clear()
        time.sleep(0.0005)
"""

DELIVER_LEFTOVERS = f"""
    import os
    import instrumentor
    from instrumentor.delivery import OutboxDestination
    from instrumentor.transports import SegmentTransport
    transport = SegmentTransport("k", endpoint=os.environ["SINK_URL"])
    destination = OutboxDestination(transport, path=os.environ["OUTBOX"], batch_size={BATCH})
    print("pending", destination.flush(20).pending)
"""


def ids_in(path: str) -> list[str]:
    with connect_sqlite(path) as conn:
        return [row[0] for row in conn.execute("SELECT message_id FROM outbox")]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_kill_9_loses_nothing_that_reached_the_outbox(server: FaultServer, tmp_path: Path) -> None:
    """SIGKILL mid-way; a new process delivers every row the file held at the kill, and what
    was lost had been tracked within ``linger`` (plus scheduling slack) of the kill."""
    path = str(tmp_path / "analytics.db")
    tracked = tmp_path / "tracked.txt"
    server.delay_next(100_000, 0.02)  # a slow provider: rows pile up in the file
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    child = subprocess.Popen(
        [sys.executable, "-c", TRACK_FOREVER.replace("\n    ", "\n")],
        cwd=ROOT,
        env={**env, "SINK_URL": server.url, "OUTBOX": path, "TRACKED": str(tracked)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # some delivered, and some waiting in the file
            delivered = len(server.message_ids())
            if delivered >= 2 * BATCH and Path(path).exists() and len(ids_in(path)) >= BATCH:
                break
            time.sleep(0.05)
        killed_at = time.time()
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, stderr
    in_file = ids_in(path)  # what the file held when the process died
    before = set(server.message_ids())
    assert len(in_file) >= BATCH, "the test did not catch rows in the file"
    server.reset()
    result = run_python(code=DELIVER_LEFTOVERS, SINK_URL=server.url, OUTBOX=path)
    assert result.returncode == 0, result.stderr
    assert "pending 0" in result.stdout
    after = server.message_ids()
    assert set(in_file) <= set(after), "rows in the file at the kill were lost"
    assert ids_in(path) == []
    when = dict(line.split() for line in tracked.read_text().splitlines() if " " in line)
    lost = set(when) - before - set(after)
    late = [float(when[i]) for i in lost]
    assert all(t >= killed_at - LINGER - SLACK for t in late), "lost more than the last linger"
    duplicates = len(before & set(after)) + sum(n - 1 for n in Counter(after).values())
    assert duplicates <= BATCH, f"{duplicates} duplicates: more than one batch"


EXIT_DURING_A_SLOW_DELIVERY = """
    import os, sys
    import instrumentor
    from instrumentor.delivery import OutboxDestination
    from instrumentor.transports import MemoryTransport, SegmentTransport
    from instrumentor import bound_context, track
    from tests.plan import Events
    from tests.fault_server import FaultServer
    transport = SegmentTransport("k", endpoint=os.environ["SINK_URL"], timeout=30)
    destination = OutboxDestination(transport, path=os.environ["OUTBOX"], linger=0.01)
    memory = MemoryTransport()
    instrumentor.configure(transports=[memory, destination], exit_timeout=1)
    with bound_context(user_id="u", account_id="acc_1"):
        track(Events.PLAN_UPGRADED)  # its batch is now in a request the server holds
        import time
        deadline = time.monotonic() + 20
        while not os.path.exists(os.environ["STARTED"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        for n in range(20):
            track(Events.PLAN_UPGRADED, properties={"n": n})
    print(" ".join(m.message_id for m in memory.messages), flush=True)
"""


def test_a_normal_exit_during_a_slow_delivery_commits_the_queue(
    server: FaultServer, path: str, tmp_path: Path
) -> None:
    """The queue reaches the file while the deliverer sits in one long request."""
    server.hang_next(1)
    started = tmp_path / "started"
    child = subprocess.Popen(
        [sys.executable, "-c", EXIT_DURING_A_SLOW_DELIVERY.replace("\n    ", "\n")],
        cwd=ROOT,
        env={**os.environ, "SINK_URL": server.url, "OUTBOX": path, "STARTED": str(started)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.wait_for_requests(1, 20), "the first delivery never started"
    started.touch()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    tracked = out.split()
    with connect_sqlite(path) as conn:
        in_file = {row[0] for row in conn.execute("SELECT message_id FROM outbox")}
    assert len(tracked) == 3 + 20
    assert set(tracked) <= in_file | set(server.message_ids()), "queued events were lost"


def run_gunicorn(server: FaultServer, path: str, *options: str) -> tuple[list[int], str]:
    """Serve 60 requests with a real gunicorn sharing one outbox; return the pids that served."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", *options, "--workers", "3",
            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10",
            "tests.delivery.gunicorn_app:app",
        ],
        cwd=ROOT,
        env={**clean, "SINK_URL": server.url, "OUTBOX_PATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    served: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a bare connection: a timed-out GET could be served
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(60):
            response = httpx.get(
                f"http://127.0.0.1:{port}/", headers={"Connection": "close"}, timeout=30
            )
            served.append(int(response.text))
        deadline = time.monotonic() + 20
        while len(tracks_received(server)) < len(served) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    return served, stderr


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_workers_share_one_outbox_exactly_once(
    server: FaultServer, tmp_path: Path, preload: bool
) -> None:
    """Three workers (and, with --preload, the master) claim batches from one file.

    gunicorn is a dev dependency: without it this fails (gunicorn cannot start), never skips.
    """
    path = str(tmp_path / "analytics.db")
    served, stderr = run_gunicorn(server, path, *(["--preload"] if preload else []))
    assert len(set(served)) >= 2, f"one worker served everything: {set(served)}\n{stderr}"
    tracks = tracks_received(server)
    properties: list[Any] = [t.get("properties", {}) for t in tracks]
    pids = [p["pid"] for p in properties if "pid" in p]
    assert sorted(pids) == sorted(served), stderr  # every request's event, once
    ids = server.message_ids()
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert ids_in(path) == []
    masters = [t for t in tracks if t["userId"] == "master"]
    assert len(masters) == (1 if preload else 3)  # without --preload each worker imports the app
