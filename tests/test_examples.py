"""The examples run as documented, in a fresh interpreter (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import textwrap

from tests.support import run_python


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    if args[0] == "-c":
        return run_python(code=args[1], **env)
    return run_python(*args, **env)


def test_quickstart_in_debug_mode_prints_the_bundle() -> None:
    """ANALYTICS_DEBUG=true prints identify, the group hierarchy and the tracks."""
    result = run(["examples/quickstart.py"], ANALYTICS_DEBUG="true")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[instrumentor")]
    kinds = [line.split(":", 1)[0].rsplit(" ", 1)[1] for line in lines]
    assert kinds == ["identify", "group", "group", "group", "track", "track", "track"]
    tracks = [json.loads(line.split(": ", 1)[1]) for line in lines if "] track:" in line]
    assert [(t["event"], t["context"]["groupId"]) for t in tracks] == [
        ("Report_Created", "proj_42"),
        ("Report_Created", "proj_42"),
        ("Teammate_Invited", "ws_789"),
    ]
    assert "done; incidents: none" in result.stdout


def test_quickstart_unconfigured_is_silent() -> None:
    """Without ANALYTICS_* variables nothing is printed or sent."""
    result = run(["examples/quickstart.py"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "incidents: none" in result.stdout


def test_import_starts_no_thread_and_reads_nothing() -> None:
    """Importing and tracking unconfigured starts no thread (subprocess, clean interpreter)."""
    code = textwrap.dedent(
        """
        import threading, instrumentor
        from instrumentor import _state
        before = threading.active_count()
        assert _state.current() is None           # nothing read at import
        import examples.quickstart as q
        q.handle_request()
        assert threading.active_count() == before, threading.enumerate()
        print("ok")
        """
    )
    result = run(["-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_accoil_local_example_delivers_per_user_in_order() -> None:
    """The Accoil example delivers every call once; each user's calls arrive in order."""
    result = run(["examples/accoil_local.py"])
    assert result.returncode == 0, result.stderr
    calls = [line.split()[0:2] for line in result.stdout.splitlines() if "/v2/" in line]
    assert len(calls) == 7
    assert all(auth == "auth=yes" for _, auth in calls)
    lines = [line for line in result.stdout.splitlines() if "/v2/" in line]
    paths = {
        user: [line.split()[0] for line in lines if f'"userId": "{user}"' in line]
        for user in ("usr_1", "usr_2")
    }
    # The account's group call goes once: Accoil's identify links each user to acc_1.
    assert paths["usr_1"] == ["/v2/identify", "/v2/group", "/v2/group", "/v2/track"]
    assert paths["usr_2"] == ["/v2/identify", "/v2/group", "/v2/track"]
    assert "flush: delivered=7 pending=0" in result.stdout
    assert "sk_example_not_real" not in result.stdout


def test_outbox_example_keeps_events_through_an_outage_and_a_restart() -> None:
    """Events tracked while the provider is down are delivered once by the next process."""
    result = run(["examples/outbox.py"])
    assert result.returncode == 0, result.stderr
    assert "provider down: pending=9 in_outbox=9" in result.stdout
    assert "after the restart: pending=0" in result.stdout
    assert "provider accepted 9 messages, 9 distinct" in result.stdout
    assert "wk_example" not in result.stdout + result.stderr
