"""``instrumentor doctor`` through the real command, against a real loopback server."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from pathlib import Path

import pytest

from instrumentor._messages import IdentifyMessage
from instrumentor.delivery._outbox import OutboxStore
from tests.fault_server import FaultServer
from tests.support import run_cli

KEY = "sk_live_9f8e7d6c5b4a39281706"


def doctor(tmp_path: Path, *args: str, **env: str) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run doctor with JSON output: (exit code, {check: (status, detail)}, everything printed)."""
    result = run_cli("doctor", "--format", "json", *args, cwd=tmp_path, env=env)
    report = json.loads(result.stdout)
    checks = {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}
    assert report["ok"] is (result.returncode == 0)
    return result.returncode, checks, result.stdout + result.stderr


def test_a_good_configuration_passes(tmp_path: Path) -> None:
    """A valid key passes with its length only; the key itself is never printed."""
    code, checks, out = doctor(tmp_path, ANALYTICS_API_KEY=KEY)
    assert code == 0
    assert checks["api key"] == ("ok", f"set ({len(KEY)} characters, not shown)")
    assert checks["endpoint"][0] == "ok"
    assert checks["test call"][0] == "info"
    assert KEY not in out


def test_no_key_warns_that_nothing_is_sent(tmp_path: Path) -> None:
    """Without an API key doctor warns that nothing will be sent and still exits 0."""
    code, checks, _ = doctor(tmp_path)
    assert code == 0
    assert checks["api key"][0] == "warning"
    assert "nothing will be sent" in checks["api key"][1]


def test_debug_mode_is_reported(tmp_path: Path) -> None:
    """Debug mode is reported as info, and so is the missing key it makes harmless."""
    _, checks, _ = doctor(tmp_path, ANALYTICS_DEBUG="true")
    assert checks["debug"][0] == "info"
    assert checks["api key"][0] == "info"


@pytest.mark.parametrize(
    ("key", "status", "words"),
    [
        ('"' + KEY + '"', "warning", "quote"),
        (KEY[:10] + " " + KEY[10:], "error", "whitespace"),
        (KEY + "\x07", "error", "unprintable"),
    ],
)
def test_malformed_keys_are_named_without_being_shown(
    tmp_path: Path, key: str, status: str, words: str
) -> None:
    """Quoted, spaced or unprintable keys are named as such without showing the key."""
    code, checks, out = doctor(tmp_path, ANALYTICS_API_KEY=key)
    assert checks["api key"][0] == status
    assert words in checks["api key"][1]
    assert code == (1 if status == "error" else 0)
    assert KEY[:10] not in out
    assert KEY[10:] not in out


def test_unreadable_environment_is_an_error(tmp_path: Path) -> None:
    """An unreadable ANALYTICS_* variable is an error naming the variable (exit 1)."""
    code, checks, _ = doctor(tmp_path, ANALYTICS_QUEUE_SIZE="lots")
    assert code == 1
    assert checks["environment"][0] == "error"
    assert "ANALYTICS_QUEUE_SIZE" in checks["environment"][1]


def test_plain_http_to_a_remote_host_warns(tmp_path: Path) -> None:
    """An http:// endpoint on a remote host is a warning about unencrypted traffic."""
    _, checks, _ = doctor(
        tmp_path, ANALYTICS_API_KEY=KEY, ANALYTICS_ENDPOINT="http://analytics.example.com"
    )
    assert checks["endpoint"][0] == "warning"
    assert "unencrypted" in checks["endpoint"][1]


def test_switches_are_explained(tmp_path: Path) -> None:
    """Instance level is explained; strict mode and tracking disabled are warnings."""
    _, checks, _ = doctor(
        tmp_path, ANALYTICS_INSTANCE_LEVEL="true", ANALYTICS_STRICT="true", ANALYTICS_ENABLED="0"
    )
    assert checks["instance level"] == (
        "info",
        "on: the user id sent is the account id (one user per installation)",
    )
    assert checks["strict"][0] == "warning"
    assert checks["enabled"][0] == "warning"


def test_outbox_paths(tmp_path: Path) -> None:
    """The outbox check tells apart a missing folder, a directory, a new file, garbage, a queue."""
    cases = {
        str(tmp_path / "missing" / "a.db"): ("error", "does not exist"),
        str(tmp_path): ("error", "is a directory"),
        str(tmp_path / "new.db"): ("ok", "will be created"),
    }
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all")
    cases[str(garbage)] = ("error", "is not a usable SQLite database")
    holding = tmp_path / "holding.db"
    store = OutboxStore(holding)
    store.open()
    store.persist([IdentifyMessage("u_1", None, {}, dt.datetime.now(dt.timezone.utc))])
    store.close()
    cases[str(holding)] = ("ok", "1 message(s) waiting, the oldest")
    for path, (status, words) in cases.items():
        _, checks, _ = doctor(tmp_path, ANALYTICS_DEBUG="1", ANALYTICS_OUTBOX=path)
        assert checks["outbox"][0] == status, path
        assert words in checks["outbox"][1], path


def test_send_test_reports_acceptance_and_the_202_caveat(tmp_path: Path) -> None:
    """--send-test sends an identify and warns that 202 does not prove the key."""
    with FaultServer(status=202) as server:
        code, checks, out = doctor(
            tmp_path, "--send-test", ANALYTICS_API_KEY=KEY, ANALYTICS_ENDPOINT=server.url
        )
        assert server.wait_for_requests(1, timeout=5)
        (received,) = server.received()
    assert code == 0
    assert checks["test call"][0] == "ok"
    assert "202 Accepted even for a wrong API key" in checks["test call"][1]
    assert received.json["userId"] == "instrumentor-doctor"
    assert received.path.endswith("/identify")
    assert KEY not in out


def test_send_test_reports_a_refusal(tmp_path: Path) -> None:
    """A refused test call is an error naming the status, without showing the key."""
    with FaultServer(status=401) as server:
        code, checks, out = doctor(
            tmp_path, "--send-test", ANALYTICS_API_KEY=KEY, ANALYTICS_ENDPOINT=server.url
        )
    assert code == 1
    assert checks["test call"][0] == "error"
    assert "401" in checks["test call"][1]
    assert KEY not in out


def test_send_test_to_nothing_listening_fails_within_the_timeout(tmp_path: Path) -> None:
    """A test call to a closed port is an error within --timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, checks, _ = doctor(
        tmp_path,
        "--send-test",
        "--timeout",
        "2",
        ANALYTICS_API_KEY=KEY,
        ANALYTICS_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    assert code == 1
    assert checks["test call"][0] == "error"


def test_text_output(tmp_path: Path) -> None:
    """The text report prints a line per check and ends with 'no problems found'."""
    result = run_cli("doctor", cwd=tmp_path, env={"ANALYTICS_API_KEY": KEY})
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "no problems found"
    assert any(line.startswith("[ok  ] api key") for line in result.stdout.splitlines())


class DribblingServer:
    """Answers every request with headers, then one body byte every half second."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n")
                for _ in range(100):
                    if self.stop.wait(0.5):
                        break
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_send_test_gives_up_after_the_timeout_on_a_dribbling_server(tmp_path: Path) -> None:
    """A server trickling its answer is abandoned after --timeout with a clear error."""
    server = DribblingServer()
    try:
        code, checks, _ = doctor(
            tmp_path,
            "--send-test",
            "--timeout",
            "1",
            ANALYTICS_API_KEY=KEY,
            ANALYTICS_ENDPOINT=server.url,
        )
    finally:
        server.close()
    assert code == 1
    assert checks["test call"] == (
        "error",
        "no answer within 1 s (--timeout): the endpoint is unreachable or too slow",
    )


def test_credentials_in_the_endpoint_are_never_shown(tmp_path: Path) -> None:
    """Credentials and query tokens in the endpoint are masked in every output."""
    with FaultServer(status=401) as server:
        host = server.url.removeprefix("http://")
        endpoint = f"http://proxyuser:PROXYSECRET@{host}/?token=QUERYSECRET"
        code, checks, out = doctor(
            tmp_path, "--send-test", ANALYTICS_API_KEY=KEY, ANALYTICS_ENDPOINT=endpoint
        )
    assert checks["endpoint"][0] == "warning"
    assert "***" in checks["endpoint"][1]
    assert checks["test call"][0] == "error"
    assert code == 1
    for secret in ("PROXYSECRET", "proxyuser", "QUERYSECRET", KEY):
        assert secret not in out


def test_a_staging_key_is_shown_going_to_staging(tmp_path: Path) -> None:
    """A key marked stg_ goes to Accoil's staging ingress unless an endpoint is set."""
    _, checks, out = doctor(tmp_path, ANALYTICS_API_KEY="stg_" + KEY)
    assert checks["endpoint"] == (
        "ok",
        "the default for a stg_ key, https://instaging.accoil.com",
    )
    assert KEY not in out
