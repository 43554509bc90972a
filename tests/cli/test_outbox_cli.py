"""``instrumentor outbox status|drain|purge`` through the real command, on real outbox files."""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path

import pytest

from instrumentor._messages import IdentifyMessage, Message
from instrumentor.delivery._outbox import OutboxStore
from instrumentor.delivery._outbox_strategy import channel_for
from instrumentor.transports._accoil import AccoilTransport
from tests.fault_server import FaultServer
from tests.support import run_cli

KEY = "sk_outbox_cli_0123456789"


def fill(path: Path, endpoint: str, count: int = 3) -> list[str]:
    """Store ``count`` messages for the Accoil channel of KEY at ``endpoint``; their ids."""
    transport = AccoilTransport(KEY, endpoint=endpoint)
    store = OutboxStore(path, channel=channel_for(transport))
    store.open()
    now = dt.datetime.now(dt.timezone.utc)
    messages: list[Message] = [IdentifyMessage(f"u_{i}", None, {}, now) for i in range(count)]
    store.persist(messages)
    store.close()
    transport.close()
    return [m.message_id for m in messages]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def outbox(*args: str, cwd: Path, endpoint: str) -> tuple[int, str, str]:
    env = {"ANALYTICS_API_KEY": KEY, "ANALYTICS_ENDPOINT": endpoint}
    result = run_cli("outbox", *args, cwd=cwd, env=env)
    assert KEY not in result.stdout + result.stderr
    return result.returncode, result.stdout, result.stderr


def test_status_drain_and_status_again(tmp_path: Path) -> None:
    """status counts the waiting messages, drain delivers them all, then status shows none."""
    path = tmp_path / "analytics.db"
    with FaultServer(status=202) as server:
        ids = fill(path, server.url)
        code, out, _ = outbox("status", str(path), cwd=tmp_path, endpoint=server.url)
        assert code == 0
        assert "waiting:     3 message(s), 0 being delivered now" in out
        channel = channel_for(AccoilTransport(KEY, endpoint=server.url))
        assert f"  {channel}: 3 waiting, 0 dead" in out

        code, out, err = outbox("drain", str(path), cwd=tmp_path, endpoint=server.url)
        assert (code, out.strip()) == (0, "delivered 3, failed 0, 0 still in the channel")
        assert "drained 3/3" in err  # not a terminal: progress as lines
        assert sorted(server.message_ids()) == sorted(ids)

    code, out, _ = outbox("status", "--format", "json", str(path), cwd=tmp_path, endpoint="x")
    status = json.loads(out)
    assert (code, status["pending"], status["channels"]) == (0, 0, {})


def test_status_reads_the_path_from_the_environment_and_writes_nothing(tmp_path: Path) -> None:
    """status finds the file from ANALYTICS_OUTBOX and leaves its data untouched."""
    path = tmp_path / "analytics.db"
    fill(path, "https://in.accoil.com")
    before = path.read_bytes()
    result = run_cli("outbox", "status", cwd=tmp_path, env={"ANALYTICS_OUTBOX": str(path)})
    assert result.returncode == 0
    assert "waiting:     3 message(s)" in result.stdout
    assert path.read_bytes() == before  # SQLite may add its -shm file; the data is untouched


def test_drain_with_the_provider_down_keeps_everything(tmp_path: Path) -> None:
    """Draining to an unreachable provider exits 1, keeps every message and records the error."""
    path = tmp_path / "analytics.db"
    endpoint = f"http://127.0.0.1:{dead_port()}"
    fill(path, endpoint)
    code, out, _ = outbox("drain", str(path), "--timeout", "1", cwd=tmp_path, endpoint=endpoint)
    assert (code, out.strip()) == (1, "delivered 0, failed 0, 3 still in the channel")
    code, out, _ = outbox("status", str(path), cwd=tmp_path, endpoint=endpoint)
    assert "waiting:     3 message(s)" in out
    assert "last error:  " in out
    assert "none recorded" not in out


def test_drain_needs_a_transport(tmp_path: Path) -> None:
    """drain without an API key exits 2 and says how to name a transport."""
    path = tmp_path / "analytics.db"
    fill(path, "https://in.accoil.com")
    result = run_cli("outbox", "drain", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "no transport to deliver with: set ANALYTICS_API_KEY" in result.stderr


def test_purge_asks_then_deletes(tmp_path: Path) -> None:
    """purge without --yes refuses, saying what it would delete; with --yes it deletes."""
    path = tmp_path / "analytics.db"
    fill(path, "https://in.accoil.com")
    refused = run_cli("outbox", "purge", str(path), cwd=tmp_path)
    assert refused.returncode == 2
    assert "purge deletes 3 message(s), waiting and dead, from" in refused.stderr
    assert "add --yes to confirm" in refused.stderr
    done = run_cli("outbox", "purge", "--yes", str(path), cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"deleted 3 message(s) from {path}")
    status = run_cli("outbox", "status", str(path), cwd=tmp_path)
    assert "waiting:     0 message(s)" in status.stdout


@pytest.mark.parametrize("command", ["status", "drain", "purge"])
def test_a_missing_file_is_never_created(tmp_path: Path, command: str) -> None:
    """status, drain and purge on a missing path exit 2 without creating the file."""
    path = tmp_path / "typo.db"
    result = run_cli(
        "outbox",
        command,
        str(path),
        "--yes"
        if command == "purge"
        else "--format=text"
        if command == "status"
        else "--timeout=1",
        cwd=tmp_path,
        env={"ANALYTICS_API_KEY": KEY},
    )
    assert result.returncode == 2
    assert "there is no outbox at" in result.stderr
    assert not path.exists()


def test_no_path_at_all(tmp_path: Path) -> None:
    """Without a path or ANALYTICS_OUTBOX the command exits 2 asking for the outbox file."""
    result = run_cli("outbox", "status", cwd=tmp_path)
    assert result.returncode == 2
    assert "name the outbox file" in result.stderr
