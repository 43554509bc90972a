"""Debug mode prints and never sends, whatever transports were passed to ``configure()``.

Every test points a real :class:`AccoilTransport` and :class:`SegmentTransport` at a real HTTP
server on loopback: in debug mode (``ANALYTICS_DEBUG=true`` or ``configure(debug=True)``) the
server gets nothing and the console prints each message; with debug off the same transports send.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import instrumentor
from instrumentor import bind_context, configure, track
from instrumentor.delivery import Destination
from instrumentor.testing import capture_events, installed_destinations
from instrumentor.transports import (
    AccoilTransport,
    ConsoleTransport,
    MemoryTransport,
    SegmentTransport,
)
from tests.fault_server import FaultServer
from tests.plan import Events
from tests.support import run_cli

ACCOIL_KEY = "acc_live_D3BUG_0123456789abcdef"
SEGMENT_KEY = "seg_write_D3BUG_0123456789abcdef"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A provider on loopback answering 200; what the test configured is shut down after it."""
    with FaultServer(status=200) as running:
        yield running
    instrumentor.shutdown(1.0)


@pytest.fixture(autouse=True)
def _identity() -> None:
    bind_context(user_id="u_1", account_id="acc_1", project_id="proj_1")


def providers(server: FaultServer) -> list[Any]:
    """A real Accoil and a real Segment transport, both sending to ``server``."""
    return [
        AccoilTransport(ACCOIL_KEY, endpoint=server.url, timeout=2.0),
        SegmentTransport(SEGMENT_KEY, endpoint=server.url, timeout=2.0),
    ]


def track_some(times: int = 3) -> None:
    for i in range(times):
        track(Events.REPORT_CREATED, properties={"n": i})


def assert_printed_not_sent(server: FaultServer, err: str, times: int = 3) -> None:
    """Nothing reached the server (after a flush); the console printed every track."""
    instrumentor.flush(5)
    assert server.requests() == []
    assert err.count("[instrumentor debug] track:") == times
    assert '"event": "Report_Created"' in err
    assert "[instrumentor debug] identify:" in err
    assert ACCOIL_KEY not in err
    assert SEGMENT_KEY not in err


class TestDebugHoldsBackGivenTransports:
    def test_from_the_environment(
        self,
        server: FaultServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """ANALYTICS_DEBUG=true with transports in code: printed, and the server gets nothing."""
        monkeypatch.setenv("ANALYTICS_DEBUG", "true")
        settings = configure(transports=providers(server))
        assert settings.debug is True
        track_some()
        assert installed_destinations() == []  # no queue, no worker, no connection
        assert_printed_not_sent(server, capsys.readouterr().err)

    def test_from_configure(self, server: FaultServer, capsys: pytest.CaptureFixture[str]) -> None:
        """configure(debug=True, transports=[...]): printed, and the server gets nothing."""
        configure(debug=True, transports=providers(server))
        track_some()
        assert_printed_not_sent(server, capsys.readouterr().err)

    def test_a_destination_given_is_held_back_too(
        self, server: FaultServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A Destination of yours around a sending transport receives nothing in debug mode."""
        destination = Destination(providers(server)[1], linger=0.01)
        configure(debug=True, transports=[destination])
        track_some()
        assert destination.stats().enqueued == 0
        assert_printed_not_sent(server, capsys.readouterr().err)
        destination.shutdown(1.0)

    def test_a_queue_publishes_nothing(
        self, server: FaultServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A queue backend is not asked for destinations in debug mode: nothing is published."""
        asked: list[bool] = []

        class Queue:
            def destinations(self, settings: Any) -> Sequence[Any]:
                asked.append(settings.debug)
                return [Destination(providers(server)[1], linger=0.01)]

        configure(debug=True, queue=Queue(), transports=None)
        track_some()
        assert asked == []
        assert_printed_not_sent(server, capsys.readouterr().err)


def delivered(server: FaultServer) -> tuple[set[str], set[str]]:
    """The message ids the server accepted from Segment and from Accoil (its Idempotency-Key).

    Sets: a retry after a timeout on a loaded machine may deliver a message twice, which is
    delivery's at-least-once promise, not a message sent in debug mode.
    """
    instrumentor.flush(5)
    assert server.wait_idle(5)
    received = server.received()
    segment = {i for r in received if r.path == "/v1/batch" for i in r.message_ids}
    accoil = {i for r in received if r.path.startswith("/v2/") for i in r.message_ids}
    return segment, accoil


class TestTurningDebugOff:
    def test_configure_debug_false_sends_with_the_same_transports(
        self, server: FaultServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Off, on, off again: only what was tracked with debug off reaches the server."""
        memory = MemoryTransport()  # keeps receiving in debug mode: it sends nothing
        configure(transports=[memory, *providers(server)], bundle_ttl=0)
        track_some(1)
        before = [m.message_id for m in memory.messages]
        assert delivered(server) == (set(before), set(before))
        configure(debug=True)
        track_some(2)
        during = [m.message_id for m in memory.messages][len(before) :]
        assert during
        assert delivered(server) == (set(before), set(before))
        configure(debug=False)
        track_some(1)
        after = [m.message_id for m in memory.messages][len(before) + len(during) :]
        assert after
        assert delivered(server) == (set(before + after), set(before + after))
        assert capsys.readouterr().err.count("[instrumentor debug] track:") == 2

    def test_unsetting_the_variable_sends_for_real(
        self, server: FaultServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With ANALYTICS_DEBUG unset, the same configure() call delivers to both providers."""
        monkeypatch.setenv("ANALYTICS_DEBUG", "true")
        configure(transports=providers(server))
        track_some(1)
        instrumentor.flush(5)
        assert server.requests() == []
        monkeypatch.delenv("ANALYTICS_DEBUG")
        instrumentor.reset_configuration()  # a new process, in effect: the environment is read
        memory = MemoryTransport()
        configure(transports=[memory, *providers(server)])
        track_some(1)
        sent = [m.message_id for m in memory.messages]
        assert delivered(server) == (set(sent), set(sent))


class TestWhatStillReceives:
    def test_the_test_recorder_is_not_sending(self, capsys: pytest.CaptureFixture[str]) -> None:
        """capture_events(debug=True) records everything and prints nothing."""
        with capture_events(debug=True) as captured:
            track_some(2)
        assert captured.event_names == ["Report_Created", "Report_Created"]
        assert capsys.readouterr().err == ""

    def test_memory_receives_beside_the_console(
        self, server: FaultServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A memory transport given keeps receiving; the providers given do not."""
        memory = MemoryTransport()
        configure(debug=True, transports=[memory, *providers(server)])
        track_some()
        assert len(memory.tracks) == 3
        assert_printed_not_sent(server, capsys.readouterr().err)

    def test_a_console_given_prints_and_no_second_one_is_added(
        self, server: FaultServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A ConsoleTransport of yours prints in debug mode; the default one is not added."""
        buffer = io.StringIO()
        configure(debug=True, transports=[ConsoleTransport(buffer), *providers(server)])
        track_some()
        assert capsys.readouterr().err == ""
        assert_printed_not_sent(server, buffer.getvalue())


class TestTheNotice:
    def test_said_once_at_configure_time_without_keys(
        self, server: FaultServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """configure() names how many transports are held back and how to send, once."""
        with caplog.at_level(logging.WARNING, "instrumentor"):
            configure(debug=True, transports=providers(server))
            configure(instance_level=True)  # the same receivers: not said again
            track_some()
        notices = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
        assert len(notices) == 1
        (notice,) = notices
        assert "2 transport(s)" in notice
        assert "AccoilTransport, SegmentTransport" in notice
        assert "unset ANALYTICS_DEBUG" in notice
        assert ACCOIL_KEY not in caplog.text
        assert SEGMENT_KEY not in caplog.text
        assert server.url not in caplog.text

    def test_not_said_when_nothing_is_held_back(self, caplog: pytest.LogCaptureFixture) -> None:
        """Debug mode with only a memory transport (or none given) holds nothing back."""
        with caplog.at_level(logging.WARNING, "instrumentor"):
            configure(debug=True, transports=[MemoryTransport()])
            configure(transports=None)
        assert "held back" not in caplog.text


def test_doctor_says_debug_sends_nothing(tmp_path: Path) -> None:
    """instrumentor doctor reports debug mode, and that nothing is sent while it is on."""
    result = run_cli("doctor", cwd=tmp_path, env={"ANALYTICS_DEBUG": "true"})
    (line,) = [line for line in result.stdout.splitlines() if "] debug" in line]
    assert "nothing is sent" in line
    assert "unset ANALYTICS_DEBUG" in line
