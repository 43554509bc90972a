"""Delivery across process boundaries: exit, fork, and a real gunicorn --preload server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.fault_server import FaultServer
from tests.support import ROOT, run_python


def run_script(code: str, server: FaultServer, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python(code=code, SINK_URL=server.url, **env)


TRACK_AND_EXIT = """
    import os
    import instrumentor
    from instrumentor import bind_context, track
    from instrumentor.transports import SegmentTransport
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
    from instrumentor import bind_context, track
    from instrumentor.transports import SegmentTransport
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


FORK_WHILE_BUILDING = """
    import os, threading
    import instrumentor
    import instrumentor._emission as emission_module
    from instrumentor import bind_context, track
    from instrumentor.transports import SegmentTransport
    from tests.plan import Events
    instrumentor.configure(transports=[SegmentTransport("k", endpoint=os.environ["SINK_URL"])])
    held, release = threading.Event(), threading.Event()
    def build_slowly():  # a parent thread in the middle of building an emission's messages
        with emission_module._expand_lock:
            held.set()
            release.wait(10)
    builder = threading.Thread(target=build_slowly)
    builder.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:
        bind_context(user_id="child", account_id="acc_1")
        track(Events.PLAN_UPGRADED)
        result = instrumentor.flush(5)
        os._exit(0 if result.pending == 0 and result.delivered >= 1 else 3)
    release.set()
    builder.join()
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_while_messages_were_being_built_still_delivers(
    server: FaultServer,
) -> None:
    """A fork while a parent thread builds messages leaves the child's message lock free."""
    result = run_script(FORK_WHILE_BUILDING, server)
    assert result.returncode == 0, result.stderr
    assert "child exit 0" in result.stdout, result.stdout + result.stderr
    assert [t["userId"] for t in tracks_received(server)] == ["child"]


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


ACCOIL_USERS_AND_EXIT = """
    import os
    import instrumentor
    from instrumentor import bound_context, track
    from instrumentor.transports import AccoilTransport
    from tests.plan import Events
    instrumentor.configure(
        transports=[AccoilTransport("sk_test", endpoint=os.environ["SINK_URL"], timeout=30)]
    )
    for user in ("u_1", "u_2", "u_3"):
        with bound_context(user_id=user, account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
"""


def test_accoil_with_several_users_delivers_at_exit(server: FaultServer) -> None:
    """Several users' calls go out in parallel even from the exit flush."""
    server.set_status(202)
    result = run_script(ACCOIL_USERS_AND_EXIT, server)
    assert result.returncode == 0, result.stderr
    # identify and track for each of three users, and the account's group call once
    assert len(server.message_ids()) == 7


def test_accoil_exit_is_bounded_with_a_hung_provider(server: FaultServer) -> None:
    """Requests hanging for 30 s do not hold the exit beyond exit_timeout."""
    server.hang_next(100)
    started = time.monotonic()
    result = run_script(ACCOIL_USERS_AND_EXIT, server, ANALYTICS_EXIT_TIMEOUT="0.5")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10  # start-up included; unbounded would be 30 s+


RECONFIGURE_AND_EXIT = """
    import os
    import instrumentor
    from instrumentor import bind_context, track
    from instrumentor.transports import SegmentTransport
    from tests.plan import Events
    url = os.environ["SINK_URL"]
    instrumentor.configure(transports=[SegmentTransport("k", endpoint=url)])
    bind_context(user_id="before", account_id="acc_1")
    track(Events.PLAN_UPGRADED)
    instrumentor.configure(transports=[SegmentTransport("k", endpoint=url)])  # replaces it
"""


def test_a_replaced_destination_is_delivered_before_exit(server: FaultServer) -> None:
    """Reconfiguring right before exit still delivers what the old destination held."""
    result = run_script(RECONFIGURE_AND_EXIT, server)
    assert result.returncode == 0, result.stderr
    assert len(server.message_ids()) == 3


MULTIPROCESSING = """
    import multiprocessing, os
    import instrumentor
    from instrumentor import bind_context, track
    from instrumentor.transports import SegmentTransport
    from tests.plan import Events

    def work(name):
        bind_context(user_id=name, account_id="acc_1")
        track(Events.PLAN_UPGRADED)

    if __name__ == "__main__":
        instrumentor.configure(transports=[SegmentTransport("k", endpoint=os.environ["SINK_URL"])])
        context = multiprocessing.get_context("fork")
        children = [context.Process(target=work, args=(f"child_{i}",)) for i in range(3)]
        for child in children:
            child.start()
        for child in children:
            child.join()
        print([child.exitcode for child in children])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_multiprocessing_children_deliver(server: FaultServer) -> None:
    """Process children (which end with os._exit) flush through multiprocessing's finalizers."""
    result = run_script(MULTIPROCESSING, server)
    assert result.returncode == 0, result.stderr
    assert "[0, 0, 0]" in result.stdout
    users = sorted(t["userId"] for t in tracks_received(server))  # type: ignore[type-var]
    assert users == ["child_0", "child_1", "child_2"]


TRACK_IN_ATEXIT = """
    import atexit, os
    import instrumentor
    from instrumentor import bind_context, track
    from instrumentor.transports import SegmentTransport
    from tests.plan import Events
    instrumentor.configure(transports=[SegmentTransport("k", endpoint=os.environ["SINK_URL"])])

    @atexit.register
    def goodbye():  # registered after instrumentor's hook, so it runs before it
        bind_context(user_id="at_exit", account_id="acc_1")
        track(Events.PLAN_UPGRADED)
"""


def test_an_event_first_tracked_during_exit_is_delivered(server: FaultServer) -> None:
    """Tracked from an application's atexit handler, the event is still delivered."""
    result = run_script(TRACK_IN_ATEXIT, server)
    assert result.returncode == 0, result.stderr
    assert [t["userId"] for t in tracks_received(server)] == ["at_exit"]
