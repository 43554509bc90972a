"""The HTTP pieces the endpoint and the adapters share: a request's headers in, a reply out.

An adapter builds an :class:`Incoming` from its request (:meth:`Incoming.from_headers`), gives
the endpoint a body reader (:func:`read_limited` or :func:`aread_limited`, raising
:class:`ClientDisconnected` when the client went away) and writes the :class:`Reply` back as it
is: status, headers (``Content-Length`` included) and body (empty for ``HEAD``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = [
    "CLIENT_CLOSED",
    "ClientDisconnected",
    "Incoming",
    "Reply",
    "aread_limited",
    "read_limited",
]

#: The status of a :class:`Reply` to a client that went away before its body arrived (nginx's
#: "client closed request"): there is no one to answer. An ASGI server sends nothing; a WSGI
#: server's write goes nowhere.
CLIENT_CLOSED = 499

_HEADERS = (
    ("content-type", "application/json"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
)


class ClientDisconnected(Exception):  # noqa: N818 - named like the frameworks' own
    """The client went away while its body was being read: raised by an adapter's body reader.

    The endpoint then answers nothing (a :class:`Reply` with status :data:`CLIENT_CLOSED`) and
    only counts it (``frontend_disconnected`` in :func:`~instrumentor.stats`).
    """


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


class _HeaderLookup(Protocol):
    def get(self, key: str, /) -> str | None: ...


class _Request(Protocol):
    """A Flask, Django or Starlette request: a method and case-insensitive headers."""

    @property
    def method(self) -> str | None: ...

    @property
    def headers(self) -> _HeaderLookup: ...


class _Headers(Protocol):
    def __setitem__(self, key: str, value: str, /) -> None: ...

    def __delitem__(self, key: str, /) -> None: ...


class _Response(Protocol):
    @property
    def headers(self) -> _Headers: ...


_R = TypeVar("_R", bound=_Response)


@dataclass(frozen=True)
class Reply:
    """What the endpoint answers: a status, a body and headers, ready to write as they are.

    Attributes:
        status: The HTTP status code (:data:`CLIENT_CLOSED`: send nothing).
        body: The encoded body (empty for ``HEAD``).
        headers: Header name and value pairs, names lower-case, ``content-length`` included
            (except on a 304).
    """

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = _HEADERS

    def json(self) -> Any:
        """The body, decoded."""
        return json.loads(self.body)

    def sized(self, method: str) -> Reply:
        """This reply as sent for ``method``: with ``Content-Length``, and no body for ``HEAD``.

        A 304 carries no ``Content-Length`` (it would describe a body it does not have).
        """
        headers = self.headers
        if self.status not in (304, CLIENT_CLOSED):
            headers = (*headers, ("content-length", str(len(self.body))))
        body = b"" if method.upper() == "HEAD" else self.body
        return Reply(self.status, body, headers)


def framework_response(reply: Reply, make: Callable[[bytes, int], _R]) -> _R:
    """``reply`` as a framework's response: ``make(body, status)``, then the reply's headers.

    The headers are set after the body, as they are: a ``HEAD`` reply's ``Content-Length``
    (the ``GET``'s length) must not be replaced by the length of its empty body, as Werkzeug's
    ``set_data`` would. A reply without a ``Content-Type`` gets none (no framework default).
    """
    response = make(reply.body, reply.status)
    if not any(name == "content-type" for name, _ in reply.headers):
        del response.headers["content-type"]
    for name, value in reply.headers:
        response.headers[name] = value
    return response


def json_reply(status: int, payload: dict[str, Any], *extra: tuple[str, str]) -> Reply:
    """A JSON reply with the endpoint's headers (``no-store``, ``nosniff``) and ``extra``."""
    return Reply(status, json.dumps(payload, ensure_ascii=True).encode(), _HEADERS + extra)


@dataclass(frozen=True)
class Incoming:
    """What the endpoint needs to know about a request before it reads the body.

    Attributes:
        method: The HTTP method.
        content_type: The ``Content-Type`` header, or ``None``.
        content_length: The ``Content-Length`` header as sent, or ``None`` (empty counts as
            absent).
        origin: The ``Origin`` header, or ``None``.
        request: The framework's own request object, handed to ``authorize_group``.
        if_none_match: The ``If-None-Match`` header, or ``None`` (for the script's 304).
    """

    method: str
    content_type: str | None = None
    content_length: str | None = None
    origin: str | None = None
    request: Any = None
    if_none_match: str | None = None

    @classmethod
    def from_request(cls, request: _Request) -> Incoming:
        """Build one from a Flask, Django or Starlette request (``method``, ``headers.get``).

        Args:
            request: The request itself (for Flask, the object behind :data:`flask.request`);
                it is handed to ``authorize_group``.
        """
        return cls.from_headers(request.method or "GET", request.headers.get, request)

    @classmethod
    def from_headers(
        cls, method: str, header: Callable[[str], str | None], request: Any = None
    ) -> Incoming:
        """Build one from a case-insensitive header lookup, e.g. ``request.headers.get``.

        Args:
            method: The request's method.
            header: ``name -> value or None``, for lower-case names.
            request: The framework's request, for ``authorize_group``.
        """
        return cls(
            method=method,
            content_type=header("content-type"),
            content_length=header("content-length"),
            origin=header("origin"),
            request=request,
            if_none_match=header("if-none-match"),
        )


def read_limited(stream: _Readable, limit: int) -> bytes | None:
    """Read a sync body stream (anything with ``read(size)``), stopping past ``limit`` bytes.

    Returns:
        The body, or ``None`` if it is larger than ``limit`` (the rest is never read).
    """
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)


async def aread_limited(chunks: AsyncIterable[bytes], limit: int) -> bytes | None:
    """Read an async stream of body chunks, stopping once it holds more than ``limit`` bytes.

    Returns:
        The body, or ``None`` if it is larger than ``limit`` (the rest is never read).
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)
