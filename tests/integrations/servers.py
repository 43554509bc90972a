"""Real servers on free loopback ports, in threads: uvicorn for ASGI apps, werkzeug for WSGI.

:func:`served` runs the Flask test app or the Django test project (``django_project``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import uvicorn
from starlette.types import ASGIApp
from werkzeug.serving import make_server

from tests.integrations import asgi_app, flask_app
from tests.support import ROOT, bind_socket

os.environ.setdefault(
    "DJANGO_SETTINGS_MODULE", "tests.integrations.django_project.settings"
)  # as conftest


@contextlib.contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``127.0.0.1`` until the block ends.

    Yields:
        The base URL, ``http://127.0.0.1:PORT``.
    """
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def serve_wsgi(app: Any, *, threaded: bool = False) -> Iterator[str]:
    """Serve a WSGI ``app`` with werkzeug's server on ``127.0.0.1`` until the block ends.

    Unthreaded (the default), one thread answers every request in turn, in one context: an
    identity that a request failed to reset would still be there for the next one.

    Yields:
        The base URL, ``http://127.0.0.1:PORT``.
    """
    server = make_server("127.0.0.1", 0, app, threaded=threaded)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def raw_request(url: str, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a hand-made request over a socket; return what the server answered (until close).

    Sending stops quietly when the server has closed its end (as it may after a 413).
    """
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        for chunk in body_chunks:
            try:
                conn.sendall(chunk)
            except OSError:
                break
        answer = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in answer:
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
        return answer


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class App:
    """An example app (``python -m examples.fastapi_app`` by default) in a subprocess.

    Args:
        example: The example's module, ``examples.fastapi_app`` or ``examples.flask_app``.
        env: ``ANALYTICS_*`` variables for it (the test process's own are not passed on).
    """

    def __init__(self, example: str = "examples.fastapi_app", /, **env: str) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")},
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", example, "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on "), line + self.stop()
        self.url = line.split()[-1]

    def stop(self) -> str:
        """Stop the server (SIGTERM, a graceful shutdown); return its standard error."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=20)
        return err


@dataclass(frozen=True)
class Served:
    """A running app: its kind (``fastapi``, ``flask``, ``django-wsgi``, ``django-asgi``), URL."""

    kind: str
    url: str

    def user(self, name: str) -> dict[str, str]:
        """Headers that sign in as ``name``, a user id of this server alone (buckets differ)."""
        return {"x-user": f"{self.kind}-{name}"}

    def post(self, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
        """Post ``body`` (JSON-encoded unless bytes) to the track endpoint as JSON."""
        return httpx.post(
            f"{self.url}/analytics/track",
            content=body if isinstance(body, bytes) else json.dumps(body).encode(),
            headers={"content-type": "application/json", **(headers or {})},
        )


@contextlib.contextmanager
def served(kind: str, **endpoint_options: Any) -> Iterator[Served]:
    """Serve a test app (FastAPI, Flask) or the Django test project on a real loopback server.

    FastAPI and Django under ASGI run under uvicorn, Flask and Django under WSGI under
    werkzeug's server. ``endpoint_options`` go to the FastAPI and Flask apps' TrackEndpoint
    (Django's come from its settings).
    """
    if kind == "fastapi":
        running = serve(asgi_app.build(**endpoint_options))
    elif kind == "flask":
        running = serve_wsgi(flask_app.build(**endpoint_options))
    elif kind == "django-wsgi":
        from django.core.wsgi import get_wsgi_application

        running = serve_wsgi(get_wsgi_application())
    else:
        from django.core.asgi import get_asgi_application

        running = serve(cast(Any, get_asgi_application()))
    with running as url:
        yield Served(kind, url)
