"""Malformed HTTP framing against the track endpoint on every real server: 4xx, never a 5xx.

Each request is written by hand over a socket to the FastAPI test app and Django under uvicorn,
and the Flask test app and Django under werkzeug's server. Where a server answers, the answer is
a 4xx (or 202 when the server hands on a valid, decoded body); where it closes or keeps waiting
instead, that is fine too, but never a 5xx, and never a 499 to a client that is still there.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Iterator

import pytest

import instrumentor
from instrumentor.testing import CapturedEvents
from tests.integrations.servers import Served, served
from tests.plan import Events

BODY = b'{"event": "Search_Performed"}'  # 29 bytes
_users = itertools.count()


@pytest.fixture(scope="module", params=["fastapi", "flask", "django-wsgi", "django-asgi"])
def server(request: pytest.FixtureRequest) -> Iterator[Served]:
    with served(request.param) as running:
        yield running


def _head(server: Served, *fields: str) -> bytes:
    """A POST to the track route as a fresh user (each its own rate-limit bucket)."""
    lines = [
        "POST /analytics/track HTTP/1.1",
        "Host: 127.0.0.1",
        f"x-user: framing-{next(_users)}",
        "Content-Type: application/json",
        *fields,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


def _exchange(
    server: Served, data: bytes, *, half_close: bool = False, more: bytes = b""
) -> int | None:
    """Send ``data``; the status of the first answer, or ``None`` if none came (closed, waited).

    ``half_close`` shuts the sending side after ``data``; ``more`` is sent over and over until
    the server answers or stops reading (a body that keeps coming).
    """
    host, port = server.url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(data)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        conn.settimeout(0.05 if more else 2)
        with contextlib.suppress(OSError):  # a timeout, a reset: no answer
            for _ in range(200 if more else 1):
                if more:
                    with contextlib.suppress(TimeoutError):
                        conn.sendall(more)
                try:
                    answer = conn.recv(65536)
                    break
                except TimeoutError:
                    if not more:
                        raise
        if answer and conn.gettimeout() != 2:
            conn.settimeout(2)
        with contextlib.suppress(OSError):
            while answer and b"\r\n" not in answer:
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
    if not answer:
        return None
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def _assert_refused_or_silent(status: int | None) -> None:
    assert status is None or (400 <= status < 500 and status != 499), status


def test_chunked_with_a_content_length_uses_the_decoded_body(
    server: Served, captured: CapturedEvents
) -> None:
    """Transfer-Encoding wins over Content-Length (RFC 9112): 202, or 400 for the conflict."""
    head = _head(server, "Transfer-Encoding: chunked", "Content-Length: 35")
    status = _exchange(server, head + _chunked(BODY))
    assert status in (202, 400), status
    if status == 202:
        assert [track.event for track in captured.tracks] == ["Search_Performed"]
    assert "internal_error" not in instrumentor.stats()


def test_chunked_without_chunks_is_refused(server: Served, captured: CapturedEvents) -> None:
    """A body after ``Transfer-Encoding: chunked`` that is not chunk-framed is a 4xx."""
    head = _head(server, "Transfer-Encoding: chunked")
    _assert_refused_or_silent(_exchange(server, head + BODY + b"\r\n\r\n"))
    captured.assert_nothing_tracked()
    assert "internal_error" not in instrumentor.stats()


def test_a_wrong_chunk_size_is_refused(server: Served, captured: CapturedEvents) -> None:
    """A chunk whose size says 16 bytes but that holds 29, then the last chunk: a 4xx."""
    head = _head(server, "Transfer-Encoding: chunked")
    _assert_refused_or_silent(_exchange(server, head + b"10\r\n" + BODY + b"\r\n0\r\n\r\n"))
    captured.assert_nothing_tracked()
    assert "internal_error" not in instrumentor.stats()


@pytest.mark.parametrize("half_close", [True, False], ids=["half-closes", "waits"])
def test_a_content_length_over_the_body_is_never_a_5xx(
    server: Served, captured: CapturedEvents, half_close: bool
) -> None:
    """Fewer bytes than Content-Length: a 4xx, or no answer at all, whether the client waits
    or shuts its sending side (which a WSGI server cannot tell from a client gone: 499 there)."""
    status = _exchange(server, _head(server, "Content-Length: 60") + BODY, half_close=half_close)
    assert status is None or 400 <= status < 500, status
    if status == 499:
        assert half_close
        assert server.kind in ("flask", "django-wsgi")
    captured.assert_nothing_tracked()
    assert "internal_error" not in instrumentor.stats()


def test_extra_bytes_after_the_content_length_do_not_change_the_first_answer(
    server: Served, captured: CapturedEvents
) -> None:
    """The first Content-Length bytes are the body; the rest is another (garbage) request."""
    head = _head(server, f"Content-Length: {len(BODY)}")
    status = _exchange(server, head + BODY + b"garbage that is no request\r\n\r\n")
    assert status == 202, status
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=1)


def test_a_body_that_keeps_coming_is_cut_off(server: Served, captured: CapturedEvents) -> None:
    """Chunks past ``max_body`` with no end: 413 (400 where the server reads no chunked body)."""
    head = _head(server, "Transfer-Encoding: chunked")
    chunk = b"100\r\n" + b" " * 256 + b"\r\n"
    status = _exchange(server, head + chunk, more=chunk)
    _assert_refused_or_silent(status)
    if server.kind != "django-asgi":  # Django's ASGI handler reads the whole body first
        assert status is not None  # the endpoint answers: it does not wait for the end
    captured.assert_nothing_tracked()
