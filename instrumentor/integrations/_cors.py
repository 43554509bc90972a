"""Which origins may call the track endpoint, and the CORS headers an allowed one is answered with.

Same-origin by default: an ``Origin`` header equal to the request's own origin (as the adapter
saw it: scheme and ``Host``) is always allowed, any other only if ``allow_origin`` allows it.
``Origin: null`` (a sandboxed frame, a ``file:`` page, some redirects) is never the request's
own: only ``allow_origin`` can allow it. A request without ``Origin`` is not a browser's
cross-origin ``POST`` (browsers send ``Origin`` on those, and on every ``fetch`` ``POST``): it
is left to the endpoint's other checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Literal, Union

from instrumentor._diagnostics import Incident
from instrumentor._state import report
from instrumentor.integrations._http import CLIENT_CLOSED, Incoming, Reply

__all__ = [
    "OriginCheck",
    "OriginRule",
    "Verdict",
    "answer",
    "origin_rule",
    "origin_verdict",
    "preflight",
]

#: ``origin -> bool``: whether a request with this ``Origin`` header may track.
OriginCheck = Callable[[str], bool]
#: What ``allow_origin`` takes: an :data:`OriginCheck`, or the allowed origins themselves.
OriginRule = Union[OriginCheck, Collection[str]]
#: ``"same"``: no ``Origin``, or the request's own; ``"allowed"``: a foreign one allowed;
#: ``"refused"``: any other.
Verdict = Literal["same", "allowed", "refused"]

#: How long a browser may cache a preflight's answer, in seconds (Chromium caps it at 7200).
MAX_AGE = "600"
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MAX_HEADERS = 16


def normal_origin(origin: str) -> str:
    """``origin`` compared as browsers do: scheme and host lower-case, no default port."""
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return origin
    scheme, host = scheme.lower(), rest.lower()
    port = _DEFAULT_PORTS.get(scheme)
    if port and host.endswith(port):
        host = host[: -len(port)]
    return f"{scheme}://{host}"


def origin_rule(allow: OriginRule | None) -> OriginCheck | None:
    """``allow_origin`` as a check: a callable as it is, a collection of origins as a lookup.

    Raises:
        TypeError: If it is neither a callable nor a collection of strings (a lone string
            included: give a list).
        ValueError: If an origin is not ``scheme://host[:port]`` (or ``"null"``).
    """
    if allow is None or callable(allow):
        return allow
    if isinstance(allow, (str, bytes)) or not all(isinstance(o, str) for o in allow):
        raise TypeError(
            "allow_origin must be a function origin -> bool or a list of origins, e.g. "
            f"['https://app.example'], got {allow!r}"
        )
    for origin in allow:
        scheme, sep, host = origin.partition("://")
        if origin != "null" and (not sep or not scheme or not host or "/" in host):
            raise ValueError(
                f"allow_origin: {origin!r} is not an origin; give scheme://host[:port] with "
                "no path, e.g. 'https://app.example'"
            )
    allowed = frozenset(normal_origin(o) for o in allow)
    return lambda origin: normal_origin(origin) in allowed


def origin_verdict(check: OriginCheck | None, incoming: Incoming) -> Verdict:
    """Whether ``incoming``'s ``Origin`` is its own, allowed by ``check``, or refused.

    ``check`` is asked about foreign origins only; one that raises refuses (a
    ``frontend_hook_error`` incident, sampled).
    """
    origin = incoming.origin
    if origin is None:
        return "same"
    own = incoming.own_origin
    if origin != "null" and own is not None and normal_origin(origin) == normal_origin(own):
        return "same"
    if check is None:
        return "refused"
    try:
        allowed = check(origin) is True
    except Exception as exc:
        incident = Incident(
            "frontend_hook_error",
            "allow_origin raised; the origin is refused",
            site="frontend endpoint allow_origin",
            error=exc,
        )
        report(incident, key="allow_origin", sampled=True)
        allowed = False
    return "allowed" if allowed else "refused"


def answer(reply: Reply, incoming: Incoming, verdict: Verdict) -> Reply:
    """``reply`` as sent (sized), with an allowed foreign origin's CORS headers.

    Those are that origin, with credentials, and ``Vary: Origin``. Any other verdict leaves the
    headers as they are: a refused origin's 403 carries no CORS header.
    """
    if reply.status == CLIENT_CLOSED:
        return reply
    if verdict != "allowed" or incoming.origin is None:
        return reply.sized(incoming.method)
    cors = (
        ("access-control-allow-origin", incoming.origin),
        ("access-control-allow-credentials", "true"),
        ("vary", "Origin"),
    )
    return Reply(reply.status, reply.body, reply.headers + cors).sized(incoming.method)


def preflight(incoming: Incoming) -> Reply:
    """The 204 to an allowed origin's ``OPTIONS``: ``POST``, JSON and the headers it asked for.

    The requested headers (a CSRF header the client is told to send, say) are echoed when they
    are header names: this origin is trusted to post, with whatever headers it sends.
    """
    names = ["content-type"]
    for name in (incoming.request_headers or "").split(","):
        name = name.strip().lower()
        if _TOKEN.fullmatch(name) and name not in names and len(names) < _MAX_HEADERS:
            names.append(name)
    headers = (
        ("cache-control", "no-store"),
        ("access-control-allow-methods", "POST"),
        ("access-control-allow-headers", ", ".join(names)),
        ("access-control-max-age", MAX_AGE),
    )
    return Reply(204, b"", headers)
