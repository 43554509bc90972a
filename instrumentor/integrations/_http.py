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
    "MalformedBody",
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


class MalformedBody(ValueError):  # noqa: N818 - named like ClientDisconnected
    """The body's framing is broken (a chunk size that is wrong or not hex, say).

    Raised by an adapter's body reader for a read error of the server that is not a lost
    connection. The endpoint answers 400: the client may still be there to read it.
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

        A 204 or a 304 carries no ``Content-Length`` (a 304's would describe a body it does not
        have; a 204 must not send one).
        """
        headers = self.headers
        if self.status not in (204, 304, CLIENT_CLOSED):
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
            absent, and so does one beside a ``Transfer-Encoding``, which overrides it as
            RFC 9112 says: the server hands on the decoded body).
        origin: The ``Origin`` header, or ``None``.
        request: The framework's own request object, handed to ``authorize_group``.
        if_none_match: The ``If-None-Match`` header, or ``None`` (for the script's 304).
        own_origin: The request's own origin as the server sees it (``scheme://host[:port]``:
            the scheme the server was reached by and the ``Host`` header), or ``None`` if
            unknown. An ``Origin`` equal to it is same-origin and always allowed; without it,
            only the endpoint's ``allow_origin`` can allow an ``Origin``.
        request_headers: The ``Access-Control-Request-Headers`` header of a CORS preflight,
            or ``None``.
    """

    method: str
    content_type: str | None = None
    content_length: str | None = None
    origin: str | None = None
    request: Any = None
    if_none_match: str | None = None
    own_origin: str | None = None
    request_headers: str | None = None

    @classmethod
    def from_request(cls, request: _Request, *, own_origin: str | None = None) -> Incoming:
        """Build one from a Flask, Django or Starlette request (``method``, ``headers.get``).

        Args:
            request: The request itself (for Flask, the object behind :data:`flask.request`);
                it is handed to ``authorize_group``.
            own_origin: The request's own origin, e.g. ``"https://app.example"``.
        """
        return cls.from_headers(
            request.method or "GET", request.headers.get, request, own_origin=own_origin
        )

    @classmethod
    def from_headers(
        cls,
        method: str,
        header: Callable[[str], str | None],
        request: Any = None,
        *,
        own_origin: str | None = None,
    ) -> Incoming:
        """Build one from a case-insensitive header lookup, e.g. ``request.headers.get``.

        Args:
            method: The request's method.
            header: ``name -> value or None``, for lower-case names.
            request: The framework's request, for ``authorize_group``.
            own_origin: The request's own origin, e.g. ``"https://app.example"``.
        """
        # Transfer-Encoding wins over Content-Length (RFC 9112, 6.3): the length is not the
        # decoded body's, which is what the server hands on.
        chunked = header("transfer-encoding") is not None
        return cls(
            method=method,
            content_type=header("content-type"),
            content_length=None if chunked else header("content-length"),
            origin=header("origin"),
            request=request,
            if_none_match=header("if-none-match"),
            own_origin=own_origin,
            request_headers=header("access-control-request-headers"),
        )


def request_origin(scheme: str | None, host: str | None) -> str | None:
    """A request's own origin from its scheme and ``Host`` header (``None`` if either is missing).

    Behind a proxy that ends TLS, the scheme is the one the proxy tells the server (configure
    the framework to trust its ``X-Forwarded-Proto``); otherwise an ``https`` page's own
    ``Origin`` would look foreign and be refused.
    """
    if not scheme or not host:
        return None
    return f"{scheme.lower()}://{host.lower()}"


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
