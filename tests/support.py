"""Helpers shared by tests: a fresh interpreter (exit, fork, global OTel providers), a socket."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(*args: str, code: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run Python from the repository root without any ANALYTICS_* variable of ours.

    Args:
        args: Arguments to the interpreter (e.g. a script path), unless ``code`` is given.
        code: Source to run with ``-c``; dedented first.
        env: Extra environment variables.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    command = (
        [sys.executable, "-c", textwrap.dedent(code)]
        if code is not None
        else [
            sys.executable,
            *args,
        ]
    )
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def instrumentor_command() -> list[str]:
    """The installed ``instrumentor`` console script next to this interpreter."""
    script = Path(sys.executable).with_name("instrumentor")
    if not script.exists():  # pragma: no cover - an install without console scripts
        raise AssertionError(f"{script} is missing: pip install -e . installs the console script")
    return [str(script)]


def run_cli(
    *args: str,
    cwd: Path,
    module: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``instrumentor`` command (or ``python -m instrumentor``) in ``cwd``.

    The environment has no ANALYTICS_* variable of ours; ``env`` adds some.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    clean.pop("PYTHONPATH", None)
    command = [sys.executable, "-m", "instrumentor"] if module else instrumentor_command()
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn's ``Server.run(sockets=[...])`` (port 0: a free one).

    It listens at once, so a client told the port may connect before uvicorn has started.

    Created with ``IPPROTO_TCP``, not the default protocol 0: asyncio sets ``TCP_NODELAY`` only
    on sockets whose protocol says TCP, and without it every response written in two parts
    (headers, then body) waits about 40 ms for a delayed ACK.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def connect_sqlite(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """``sqlite3.connect`` as a block that commits and then closes the connection.

    sqlite3's own ``with connection:`` only commits; the connection stays open until garbage
    collection, which Python 3.13 reports as a ResourceWarning (an error in this suite).
    """
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()
