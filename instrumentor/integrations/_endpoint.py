"""The frontend track endpoint, framework-agnostic: every rule lives here, adapters stay thin.

An adapter turns its request into an :class:`Incoming`, resolves the :class:`Identity`, gives a
body reader that stops at a limit, and writes the :class:`Reply` back. The checks, in order:

====== ===================================================================================
405    not ``POST``
403    an ``Origin`` the ``allow_origin`` hook refuses
401    no identity (the resolver returned nothing or raised)
429    over the identity's rate limit (with ``Retry-After``)
415    not ``Content-Type: application/json``
413    a body over ``max_body`` bytes (by ``Content-Length``, else while reading)
400    not UTF-8 JSON (or nested too deep)
422    not ``{"event": "...", "group_id"?: "..."}``; an unknown event, or one the plan does
       not mark ``frontend=True``
403    a ``group_id`` from the client without an ``authorize_group`` hook, or refused by it
202    ``{"accepted": true}``: tracked with :func:`~instrumentor.track`, fire-and-forget
====== ===================================================================================

Whatever it is sent, the endpoint never raises and never answers 5xx. Every rejection is counted
and logged (rate-limited) as a ``frontend_rejected`` incident.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, Union

from instrumentor.diagnostics import Incident
from instrumentor.integrations._identity import Identity
from instrumentor.integrations._ratelimit import TokenBucketLimiter, retry_after
from instrumentor.registry import EventRegistry, find_event

__all__ = [
    "GroupAuthorizer",
    "Incoming",
    "OriginCheck",
    "Reply",
    "TrackEndpoint",
    "aread_limited",
    "read_limited",
]

#: ``(identity, request, level, group_id) -> bool``, sync or async: may this identity send
#: events for this group? Only ``True`` allows.
GroupAuthorizer = Callable[[Identity, Any, str, str], Union[bool, Awaitable[bool]]]
#: ``origin -> bool``: whether a request with this ``Origin`` header may track.
OriginCheck = Callable[[str], bool]

_FIELDS = ("event", "group_id")
_MAX_NAME = 128
_MAX_GROUP_ID = 256
_PREVIEW = 64
_HEADERS = (
    ("content-type", "application/json"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


@dataclass(frozen=True)
class Reply:
    """What the endpoint answers: a status, a JSON body and headers.

    Attributes:
        status: The HTTP status code.
        body: The encoded body.
        headers: Header name and value pairs, names lower-case.
    """

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = _HEADERS

    def json(self) -> Any:
        """The body, decoded."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Incoming:
    """What the endpoint needs to know about a request before it reads the body.

    Attributes:
        method: The HTTP method.
        content_type: The ``Content-Type`` header, or ``None``.
        content_length: The ``Content-Length`` header as sent, or ``None``.
        origin: The ``Origin`` header, or ``None``.
        request: The framework's own request object, handed to ``authorize_group``.
    """

    method: str
    content_type: str | None = None
    content_length: str | None = None
    origin: str | None = None
    request: Any = None


@dataclass(frozen=True)
class _Parsed:
    event: EventRegistry
    group_id: str | None


def _reply(status: int, payload: dict[str, Any], *extra: tuple[str, str]) -> Reply:
    return Reply(status, json.dumps(payload, ensure_ascii=True).encode(), _HEADERS + extra)


_ACCEPTED = _reply(202, {"accepted": True})


def _preview(value: str) -> str:
    """A short, safe rendering of client input for an error message."""
    text = value if len(value) <= _PREVIEW else value[:_PREVIEW] + "..."
    return json.dumps(text, ensure_ascii=True)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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


class TrackEndpoint:
    """The rules of ``POST {prefix}/track``, shared by every framework adapter.

    Args:
        prefix: Where the routes live: ``POST {prefix}/track`` and
            ``GET {prefix}/instrumentor.js``.
        max_body: Largest body accepted, in bytes (413 beyond).
        rate: Requests per second each identity may make, on average; ``None`` for no limit.
        burst: Requests an identity may make at once before the rate applies.
        max_identities: Identities whose rate is tracked at most (least recently seen ones
            are forgotten first), which bounds the limiter's memory.
        authorize_group: ``(identity, request, level, group_id) -> bool`` (sync, or async
            under ASGI): whether a ``group_id`` sent by the browser may be used. Without it,
            a client group id is refused with 403; group ids come from the server's context.
        allow_origin: ``origin -> bool``, checked when the request carries an ``Origin``
            header; a refused origin gets 403.

    Raises:
        ValueError: If a limit is not positive, or ``prefix`` does not start with ``/``.
    """

    def __init__(
        self,
        *,
        prefix: str = "/analytics",
        max_body: int = 1024,
        rate: float | None = 2.0,
        burst: int = 30,
        max_identities: int = 10_000,
        authorize_group: GroupAuthorizer | None = None,
        allow_origin: OriginCheck | None = None,
    ) -> None:
        if not prefix.startswith("/"):
            raise ValueError(f"prefix must start with '/', e.g. '/analytics', got {prefix!r}")
        self.prefix = prefix.rstrip("/")
        #: The path of the track route.
        self.track_path = f"{self.prefix}/track"
        #: The path the JS client is served at.
        self.script_path = f"{self.prefix}/instrumentor.js"
        if max_body < 16:
            raise ValueError(f"max_body must be at least 16 bytes, got {max_body!r}")
        self.max_body = int(max_body)
        self.limiter = (
            TokenBucketLimiter(rate, burst, max_keys=max_identities) if rate is not None else None
        )
        self.authorize_group = authorize_group
        self.allow_origin = allow_origin

    # -- the whole request, for adapters ------------------------------------------------------

    def handle(
        self,
        incoming: Incoming,
        identity: Identity | None,
        read_body: Callable[[int], bytes | None],
    ) -> Reply:
        """Answer a request in a sync framework. Never raises.

        Args:
            incoming: The request's method and headers.
            identity: Who is acting, or ``None`` if the resolver found no one.
            read_body: Reads the body, returning ``None`` past the given limit
                (e.g. ``lambda limit: read_limited(stream, limit)``).
        """
        try:
            rejected = self.precheck(incoming, identity)
            if rejected is not None:
                return rejected
            assert identity is not None  # precheck answered 401 otherwise
            parsed = self.parse(read_body(self.max_body))
            if isinstance(parsed, Reply):
                return parsed
            verdict = self._group_verdict(identity, incoming, parsed)
            if inspect.isawaitable(verdict):
                if inspect.iscoroutine(verdict):
                    verdict.close()
                return self._refuse_group(parsed, "authorize_group is async; give a sync one")
            return self._finish(identity, parsed, verdict)
        except Exception as exc:
            return self._internal(exc)

    async def ahandle(
        self,
        incoming: Incoming,
        identity: Identity | None,
        read_body: Callable[[int], Awaitable[bytes | None]],
    ) -> Reply:
        """Answer a request in an async framework. Never raises.

        Args:
            incoming: The request's method and headers.
            identity: Who is acting, or ``None`` if the resolver found no one.
            read_body: Reads the body, returning ``None`` past the given limit
                (e.g. ``lambda limit: aread_limited(chunks, limit)``).
        """
        try:
            rejected = self.precheck(incoming, identity)
            if rejected is not None:
                return rejected
            assert identity is not None
            parsed = self.parse(await read_body(self.max_body))
            if isinstance(parsed, Reply):
                return parsed
            verdict = self._group_verdict(identity, incoming, parsed)
            if inspect.isawaitable(verdict):
                try:
                    verdict = await verdict
                except Exception as exc:
                    return self._refuse_group(parsed, f"authorize_group raised {exc!r}", exc)
            return self._finish(identity, parsed, verdict)
        except Exception as exc:
            return self._internal(exc)

    # -- the steps ----------------------------------------------------------------------------

    def precheck(self, incoming: Incoming, identity: Identity | None) -> Reply | None:
        """The checks made before reading the body: method, origin, identity, rate, headers.

        Returns:
            The rejection to answer, or ``None`` to go on and read the body.
        """
        if incoming.method.upper() != "POST":
            return self._reject(
                405,
                "method_not_allowed",
                f"use POST, not {incoming.method[:16]!r}",
                ("allow", "POST"),
            )
        if incoming.origin is not None and self.allow_origin is not None:
            try:
                allowed = self.allow_origin(incoming.origin) is True
            except Exception as exc:
                self._incident("allow_origin raised; the origin is refused", exc)
                allowed = False
            if not allowed:
                return self._reject(
                    403,
                    "origin_not_allowed",
                    f"requests from origin {_preview(incoming.origin)} may not track",
                )
        if identity is None or identity.key is None:
            return self._reject(
                401,
                "unauthenticated",
                "no signed-in identity for this request; events are tracked for known users only",
            )
        if self.limiter is not None:
            wait = self.limiter.acquire(identity.key)
            if wait > 0:
                after = retry_after(wait)
                return self._reject(
                    429,
                    "rate_limited",
                    f"too many events from this identity; retry after {after} s",
                    ("retry-after", after),
                )
        media_type, _, params = (incoming.content_type or "").partition(";")
        charset = params.strip().lower().replace('"', "")
        if media_type.strip().lower() != "application/json" or charset not in (
            "",
            "charset=utf-8",
        ):
            return self._reject(
                415,
                "unsupported_media_type",
                "send the body as Content-Type: application/json (UTF-8)",
            )
        if incoming.content_length is not None:
            length = incoming.content_length.strip()
            if not length.isdigit() or not length.isascii():
                return self._reject(400, "bad_request", "Content-Length is not a number")
            if int(length) > self.max_body:
                return self._too_large()
        return None

    def parse(self, body: bytes | None) -> _Parsed | Reply:
        """Check a body read with the limit (``None``: it was over) and find its event.

        Returns:
            The event (and the client's group id, if any), or the rejection to answer.
        """
        if body is None or len(body) > self.max_body:
            return self._too_large()
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._reject(400, "malformed_json", "the body is not valid UTF-8 JSON")
        if not isinstance(data, dict):
            return self._invalid(f"the body must be a JSON object, not {type(data).__name__}")
        unknown = [key for key in data if key not in _FIELDS]
        if unknown:
            return self._invalid(
                f"unknown field {_preview(unknown[0])}; send only {', '.join(_FIELDS)}"
            )
        name = data.get("event")
        if not isinstance(name, str) or not name:
            return self._invalid('"event" must be a non-empty string, e.g. "Search_Performed"')
        event = find_event(name) if len(name) <= _MAX_NAME else None
        if event is None:
            return self._reject(
                422,
                "unknown_event",
                f"event {_preview(name)} is not in the tracking plan",
                name=name,
            )
        if not event._value_.frontend:
            return self._reject(
                422,
                "event_not_allowed",
                f"event {_preview(name)} is not marked frontend=True in the tracking plan; "
                "the browser may send only frontend events",
                name=name,
            )
        group_id = data.get("group_id")
        if group_id is None:
            return _Parsed(event, None)
        if isinstance(group_id, int) and not isinstance(group_id, bool):
            group_id = str(group_id)
        if not isinstance(group_id, str) or not group_id or len(group_id) > _MAX_GROUP_ID:
            return self._invalid(
                f'"group_id" must be a non-empty string of at most {_MAX_GROUP_ID} characters'
            )
        return _Parsed(event, group_id)

    def _group_verdict(
        self, identity: Identity, incoming: Incoming, parsed: _Parsed
    ) -> bool | Reply | Awaitable[bool]:
        if parsed.group_id is None:
            return True
        if self.authorize_group is None:
            return self._refuse_group(parsed, "no authorize_group hook is configured")
        try:
            return self.authorize_group(
                identity, incoming.request, parsed.event._level, parsed.group_id
            )
        except Exception as exc:
            return self._refuse_group(parsed, f"authorize_group raised {exc!r}", exc)

    def _finish(self, identity: Identity, parsed: _Parsed, verdict: object) -> Reply:
        if isinstance(verdict, Reply):
            return verdict
        if verdict is not True:
            return self._refuse_group(parsed, "authorize_group refused it")
        from instrumentor.context import reset_context
        from instrumentor.emitter import track

        token = identity.bind()
        try:
            track(parsed.event, group_id=parsed.group_id)
        except Exception:  # strict mode: already reported as an incident; never a 5xx
            pass
        finally:
            reset_context(token)
        return _ACCEPTED

    # -- rejections ---------------------------------------------------------------------------

    def _refuse_group(self, parsed: _Parsed, why: str, error: BaseException | None = None) -> Reply:
        if error is not None:
            self._incident(f"authorize_group raised; the group id is refused ({why})", error)
        return self._reject(
            403,
            "group_not_allowed",
            f"this identity may not send events for {parsed.event._level} "
            f"{_preview(parsed.group_id or '')}; group ids come from the server's session",
            name=parsed.event._value_.name,
            log=why,
        )

    def _too_large(self) -> Reply:
        return self._reject(
            413, "payload_too_large", f"the body is larger than {self.max_body} bytes"
        )

    def _invalid(self, detail: str) -> Reply:
        return self._reject(422, "invalid_body", detail)

    def _internal(self, exc: Exception) -> Reply:
        self._incident("the track endpoint failed; answered 400", exc, "internal_error")
        return _reply(400, {"accepted": False, "error": "bad_request", "detail": "not tracked"})

    def _reject(
        self,
        status: int,
        code: str,
        detail: str,
        *extra: tuple[str, str],
        name: str | None = None,
        log: str | None = None,
    ) -> Reply:
        from instrumentor.config import runtime

        runtime().report(
            Incident(
                "frontend_rejected",
                f"{status} {code}: {detail}" + (f" ({log})" if log else ""),
                event=name[:_MAX_NAME] if name is not None else None,
                site=f"frontend endpoint {code}",
            ),
            key=code,
        )
        return _reply(status, {"accepted": False, "error": code, "detail": detail}, *extra)

    def _incident(
        self, message: str, error: BaseException, kind: str = "frontend_hook_error"
    ) -> None:
        from instrumentor.config import runtime

        with contextlib.suppress(Exception):
            runtime().report(Incident(kind, message, site="frontend endpoint", error=error))
