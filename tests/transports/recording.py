"""A recording httpx handler shared by the transport tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


class RecordingHandler:
    """An httpx MockTransport handler that records every request it gets.

    It answers ``respond(request)`` when given, else ``default_status``.
    """

    default_status = 200

    def __init__(self, respond: Handler | None = None) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self.lock:
            self.requests.append(request)
        return self.respond(request) if self.respond else httpx.Response(self.default_status)
