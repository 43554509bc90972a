"""The frontend track endpoint, framework-agnostic: every rule lives here, adapters stay thin.

An adapter finds the route (:meth:`TrackEndpoint.route`), turns its request into an
:class:`~instrumentor.integrations.Incoming`, resolves the identity, gives a body reader that
stops at a limit, and writes the :class:`~instrumentor.integrations.Reply` back as it is. The
checks, in order (the cheap ones, and those a cross-site page can trigger, before the rate
limit takes a token):

====== ===================================================================================
204    a CORS preflight (``OPTIONS``, a foreign ``Origin``) from an allowed origin (else 403)
405    not ``POST``
415    not ``Content-Type: application/json``
413    a ``Content-Length`` over ``max_body`` bytes (400: one that is not a number)
403    an ``Origin`` that is not the request's own and not allowed by ``allow_origin``
401    no identity (the resolver returned nothing or raised)
429    over the identity's rate limit (with ``Retry-After``)
413    a body that grows over ``max_body`` bytes while it is read
400    not UTF-8 JSON (or nested too deep)
422    not ``{"event": "...", "group_id"?: "..."}``; an unknown event, or one the plan does
       not mark ``frontend=True``
403    a ``group_id`` from the client without an ``authorize_group`` hook, or refused by it
202    ``{"accepted": true}``: tracked with :func:`~instrumentor.track`, fire-and-forget
====== ===================================================================================

Whatever it is sent, the endpoint never raises and never answers 5xx. Every rejection is counted
as a ``frontend_rejected`` incident, logged and handed to ``on_error`` at most once a minute per
kind of rejection (sampled). A client that goes away mid-body gets no answer and is only
counted (``frontend_disconnected``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Literal, Union, cast

from instrumentor._context import reset_context
from instrumentor._diagnostics import Incident, count_quietly
from instrumentor._emitter import track
from instrumentor._registry import EventRegistry, find_event
from instrumentor._state import report as report_incident
from instrumentor.integrations import _cors
from instrumentor.integrations._cors import OriginCheck, OriginRule, Verdict
from instrumentor.integrations._http import (
    CLIENT_CLOSED,
    ClientDisconnected,
    Incoming,
    MalformedBody,
    Reply,
    json_reply,
)
from instrumentor.integrations._identity import Identity, bind_identity
from instrumentor.integrations._ratelimit import TokenBucketLimiter, retry_after
from instrumentor.integrations._script import script_reply

__all__ = ["GroupAuthorizer", "OriginCheck", "Route", "TrackEndpoint"]

#: ``(identity, request, level, group_id) -> bool``, sync or async: may this identity send
#: events for this group? Only ``True`` allows.
GroupAuthorizer = Callable[[Identity, Any, str, str], Union[bool, Awaitable[bool]]]
#: Which of the endpoint's two routes a path is: ``"track"`` or ``"script"``.
Route = Literal["track", "script"]

#: ``TrackEndpoint``'s default ``max_body``, in bytes.
DEFAULT_MAX_BODY = 1024
_FIELDS = ("event", "group_id")
_MAX_NAME = 128
_MAX_GROUP_ID = 256
_MAX_LENGTH_DIGITS = 19  # more digits than any real body; int() of 5000 digits even raises
_PREVIEW = 64
_READ = object()  # what the rules yield to have the body read
_ACCEPTED = json_reply(202, {"accepted": True})
_GONE = Reply(CLIENT_CLOSED, b"", ())


class _Parsed:
    __slots__ = ("event", "group_id")

    def __init__(self, event: EventRegistry, group_id: str | None) -> None:
        self.event = event
        self.group_id = group_id


class _Refused:
    """A group id the hook did not get to allow: no hook, an async one in a sync app, a raise."""

    __slots__ = ("error", "why")

    def __init__(self, why: str, error: BaseException | None = None) -> None:
        self.why = why
        self.error = error


def _escape(value: str) -> str:
    """Client input made safe to log or show: JSON-escaped, without the quotes."""
    return json.dumps(value, ensure_ascii=True)[1:-1]


def _preview(value: str) -> str:
    """A short, safe rendering of client input for an error message."""
    text = value if len(value) <= _PREVIEW else value[:_PREVIEW] + "..."
    return json.dumps(text, ensure_ascii=True)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _report(kind: str, message: str, *, key: str, **details: Any) -> None:
    """Every incident of the endpoint: request-driven, so sampled per kind and key."""
    report_incident(
        Incident(kind, message, site=f"frontend endpoint {key}", **details), key=key, sampled=True
    )


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
        allow_origin: Foreign origins (not the request's own) that may post, with CORS:
            ``origin -> bool`` or the origins, e.g. ``["https://app.example"]``; ``None`` (the
            default): none. ``Origin: null`` is refused unless allowed here too.

    Raises:
        ValueError: If a limit is not positive, ``prefix`` does not start with ``/``, or an
            origin in ``allow_origin`` is not ``scheme://host[:port]``.
        TypeError: If ``allow_origin`` is neither a callable nor a collection of strings.
    """

    def __init__(
        self,
        *,
        prefix: str = "/analytics",
        max_body: int = DEFAULT_MAX_BODY,
        rate: float | None = 2.0,
        burst: int = 30,
        max_identities: int = 10_000,
        authorize_group: GroupAuthorizer | None = None,
        allow_origin: OriginRule | None = None,
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
        self._origin_check = _cors.origin_rule(allow_origin)

    # -- routes, for adapters -----------------------------------------------------------------

    def require_sync_hooks(self, framework: str) -> None:
        """Refuse an ``async`` ``authorize_group`` where the track view runs synchronously.

        A sync framework cannot await it, so every client group id would get 403 without a
        word: better an error at start-up.

        Args:
            framework: Named in the error, e.g. ``"Flask"``.

        Raises:
            TypeError: If ``authorize_group`` is an ``async`` function (or an object whose
                ``__call__`` is one).
        """
        hook = self.authorize_group
        if hook is not None and (
            inspect.iscoroutinefunction(hook)
            or inspect.iscoroutinefunction(getattr(hook, "__call__", None))  # noqa: B004
        ):
            name = getattr(hook, "__qualname__", hook)
            raise TypeError(
                f"authorize_group {name!r} is async, but {framework} "
                "runs the track view synchronously and cannot await it; give a plain function"
            )

    def route(self, path: str) -> Route | None:
        """Which route ``path`` is: ``"track"``, ``"script"``, or ``None`` (not the endpoint's)."""
        if path == self.track_path:
            return "track"
        if path == self.script_path:
            return "script"
        return None

    def script(self, incoming: Incoming) -> Reply:
        """Answer ``GET {prefix}/instrumentor.js`` (``HEAD`` too; 304, 405). Never raises."""
        try:
            reply = script_reply(incoming.method, incoming.if_none_match)
        except Exception as exc:  # broken packaging: the file is not installed
            _report(
                "internal_error",
                "instrumentor.js cannot be read from the installed package; answered 404. "
                "Reinstall instrumentor",
                key="script",
                error=exc,
            )
            reply = json_reply(404, {"error": "not_found", "detail": "instrumentor.js is missing"})
        return reply.sized(incoming.method)

    def handle(
        self,
        incoming: Incoming,
        identity: Identity | None,
        read_body: Callable[[int], bytes | None],
    ) -> Reply:
        """Answer ``POST {prefix}/track`` in a sync framework. Never raises.

        Args:
            incoming: The request's method and headers.
            identity: Who is acting, or ``None`` if the resolver found no one.
            read_body: Reads the body, returning ``None`` past the given limit
                (e.g. ``lambda limit: read_limited(stream, limit)``); it raises
                :class:`~instrumentor.integrations.ClientDisconnected` if the client went away.
        """
        verdict = _cors.origin_verdict(self._origin_check, incoming)
        rules = self._rules(incoming, identity, verdict)
        try:
            step = next(rules)
            while True:
                if step is _READ:
                    sent: object = read_body(self.max_body)
                else:  # an async authorize_group: a sync framework cannot await it
                    if inspect.iscoroutine(step):
                        step.close()
                    sent = _Refused("authorize_group is async; give a sync one")
                step = rules.send(sent)
        except StopIteration as done:
            return _cors.answer(done.value, incoming, verdict)
        except Exception as exc:
            return _cors.answer(self._failed(exc), incoming, verdict)

    async def ahandle(
        self,
        incoming: Incoming,
        identity: Identity | None,
        read_body: Callable[[int], Awaitable[bytes | None]],
    ) -> Reply:
        """Answer ``POST {prefix}/track`` in an async framework. Never raises.

        Args:
            incoming: The request's method and headers.
            identity: Who is acting, or ``None`` if the resolver found no one.
            read_body: Reads the body, returning ``None`` past the given limit
                (e.g. ``lambda limit: aread_limited(chunks, limit)``); it raises
                :class:`~instrumentor.integrations.ClientDisconnected` if the client went away.
        """
        verdict = _cors.origin_verdict(self._origin_check, incoming)
        rules = self._rules(incoming, identity, verdict)
        try:
            step = next(rules)
            while True:
                if step is _READ:
                    sent: object = await read_body(self.max_body)
                else:
                    try:
                        sent = await cast("Awaitable[object]", step)
                    except Exception as exc:
                        sent = _Refused(f"authorize_group raised {exc!r}", exc)
                step = rules.send(sent)
        except StopIteration as done:
            return _cors.answer(done.value, incoming, verdict)
        except Exception as exc:
            return _cors.answer(self._failed(exc), incoming, verdict)

    # -- the rules, shared by handle and ahandle ------------------------------------------------

    def _rules(
        self, incoming: Incoming, identity: Identity | None, origin: Verdict
    ) -> Generator[object, Any, Reply]:
        """The request's rules without I/O: yields for the body (and an async hook's verdict)."""
        rejected = self._precheck(incoming, identity, origin)
        if rejected is not None:
            return rejected
        assert identity is not None  # _precheck answered 401 otherwise
        body: bytes | None = yield _READ
        parsed = self._parse(body, incoming)
        if isinstance(parsed, Reply):
            return parsed
        verdict = self._group_verdict(identity, incoming, parsed)
        if inspect.isawaitable(verdict):
            verdict = yield verdict
        if isinstance(verdict, _Refused):
            return self._refuse_group(parsed, verdict.why, verdict.error)
        if verdict is not True:
            return self._refuse_group(parsed, "authorize_group refused it")
        return self._finish(identity, parsed)

    def _precheck(
        self, incoming: Incoming, identity: Identity | None, origin: Verdict
    ) -> Reply | None:
        """The checks made before reading the body; ``None`` to go on and read it."""
        if incoming.method.upper() == "OPTIONS" and origin != "same":  # a CORS preflight
            allowed = origin == "allowed"
            return _cors.preflight(incoming) if allowed else self._refuse_origin(incoming)
        if incoming.method.upper() != "POST":
            return self._reject(
                405,
                "method_not_allowed",
                f"use POST, not {_preview(incoming.method[:16])}",
                ("allow", "POST"),
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
        length = (incoming.content_length or "").strip()  # empty: as if absent
        if length:
            if not length.isdigit() or not length.isascii():
                return self._reject(400, "bad_request", "Content-Length is not a number")
            if len(length) > _MAX_LENGTH_DIGITS or int(length) > self.max_body:
                return self._too_large()
        if origin == "refused":  # no CORS headers: the browser hides even the 403
            return self._refuse_origin(incoming)
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
        return None

    def _parse(self, body: bytes | None, incoming: Incoming) -> _Parsed | Reply:
        """Check a body read with the limit (``None``: it was over) and find its event."""
        if body is None or len(body) > self.max_body:
            return self._too_large()
        length = (incoming.content_length or "").strip()
        if length and len(body) < int(length):  # whole, says the reader: a gone client raises
            detail = f"the body has {len(body)} bytes, fewer than its Content-Length of {length}"
            return self._reject(400, "bad_request", detail)
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
        if not event.frontend:
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
    ) -> object | Awaitable[bool]:
        if parsed.group_id is None:
            return True
        if self.authorize_group is None:
            return _Refused("no authorize_group hook is configured")
        try:
            return self.authorize_group(
                identity, incoming.request, parsed.event.routing.level, parsed.group_id
            )
        except Exception as exc:
            return _Refused(f"authorize_group raised {exc!r}", exc)

    def _finish(self, identity: Identity, parsed: _Parsed) -> Reply:
        token = bind_identity(identity)
        if token is None:  # checked by the resolver's helpers; reported by bind_identity
            return self._reject(401, "unauthenticated", "the identity could not be bound")
        try:
            track(parsed.event, group_id=parsed.group_id)
        except Exception:  # strict mode: already reported as an incident; never a 5xx
            pass
        finally:
            reset_context(token)
        return _ACCEPTED

    # -- answers other than 202 ----------------------------------------------------------------

    def _refuse_origin(self, incoming: Incoming) -> Reply:
        detail = f"requests from origin {_preview(incoming.origin or '')} may not track"
        return self._reject(403, "origin_not_allowed", detail)

    def _failed(self, exc: Exception) -> Reply:
        if isinstance(exc, ClientDisconnected):
            count_quietly(
                "frontend_disconnected", f"the client went away while sending its body ({exc})"
            )
            return _GONE
        if isinstance(exc, MalformedBody):
            why = f"the body's framing is broken ({exc}); send a well-formed request"
            return self._reject(400, "bad_request", why)
        _report(
            "internal_error", "the track endpoint failed; answered 400", key="internal", error=exc
        )
        detail = {"accepted": False, "error": "bad_request", "detail": "not tracked"}
        return json_reply(400, detail)

    def _refuse_group(self, parsed: _Parsed, why: str, error: BaseException | None = None) -> Reply:
        if error is not None:
            _report(
                "frontend_hook_error",
                f"authorize_group raised; the group id is refused ({why})",
                key="authorize_group",
                error=error,
            )
        return self._reject(
            403,
            "group_not_allowed",
            f"this identity may not send events for {parsed.event.routing.level} "
            f"{_preview(parsed.group_id or '')}; group ids come from the server's session",
            name=parsed.event.event_name,
            log=why,
        )

    def _too_large(self) -> Reply:
        return self._reject(
            413, "payload_too_large", f"the body is larger than {self.max_body} bytes"
        )

    def _invalid(self, detail: str) -> Reply:
        return self._reject(422, "invalid_body", detail)

    def _reject(
        self,
        status: int,
        code: str,
        detail: str,
        *extra: tuple[str, str],
        name: str | None = None,
        log: str | None = None,
    ) -> Reply:
        _report(
            "frontend_rejected",
            f"{status} {code}: {detail}" + (f" ({log})" if log else ""),
            key=code,
            # Client input: escaped like the message, never handed on raw.
            event=_escape(name[:_MAX_NAME]) if name is not None else None,
        )
        return json_reply(status, {"accepted": False, "error": code, "detail": detail}, *extra)
