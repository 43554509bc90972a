"""Backend routing: frontend events go through your server, which adds the identity it knows.

The browser sends only an event name to ``POST {prefix}/track``; the server checks it against
the tracking plan (only ``frontend=True`` events), binds the identity its resolver returns for
the request, and tracks it. The API key never leaves the server.

This package is framework-agnostic and imports no web framework: :class:`Identity` and the
resolver helpers, :class:`TrackEndpoint` (every rule of the endpoint and its routes), the HTTP
pieces an adapter needs (:class:`Incoming`, :class:`Reply`, the body readers) and the JS client.
The adapters build on it: :mod:`instrumentor.integrations.asgi` for Starlette and FastAPI,
:mod:`instrumentor.integrations.flask` and :mod:`instrumentor.integrations.django`. Celery
context propagation is :mod:`instrumentor.celery._context`.
"""

from __future__ import annotations

from instrumentor.integrations._endpoint import GroupAuthorizer, OriginCheck, Route, TrackEndpoint
from instrumentor.integrations._http import (
    CLIENT_CLOSED,
    ClientDisconnected,
    Incoming,
    Reply,
    aread_limited,
    read_limited,
)
from instrumentor.integrations._identity import (
    Identity,
    IdentityResolver,
    aresolve_identity,
    bind_identity,
    bind_request_identity,
    resolve_identity,
)
from instrumentor.integrations._ratelimit import TokenBucketLimiter
from instrumentor.integrations._script import script_reply, script_source

__all__ = [
    "CLIENT_CLOSED",
    "ClientDisconnected",
    "GroupAuthorizer",
    "Identity",
    "IdentityResolver",
    "Incoming",
    "OriginCheck",
    "Reply",
    "Route",
    "TokenBucketLimiter",
    "TrackEndpoint",
    "aread_limited",
    "aresolve_identity",
    "bind_identity",
    "bind_request_identity",
    "read_limited",
    "resolve_identity",
    "script_reply",
    "script_source",
]
