"""ASGI integration (Starlette, FastAPI): bind the identity per request, serve the track endpoint.

.. code-block:: python

    from fastapi import FastAPI, Request
    from instrumentor.integrations import Identity, TrackEndpoint
    from instrumentor.integrations.asgi import AnalyticsMiddleware

    def resolve(request: Request) -> Identity | None:
        user = request.state.user  # whatever your authentication put there
        return Identity(user_id=user.id, account_id=user.account_id) if user else None

    app = FastAPI()
    app.add_middleware(AnalyticsMiddleware, resolver=resolve, endpoint=TrackEndpoint())

For every HTTP request the resolver (sync or async) is called once; its identity is bound with
:func:`~instrumentor.bind_context` while the application handles the request, including sync
views (Starlette runs them in a thread pool that copies the context) and ``BackgroundTasks``,
and reset afterwards. ``POST {prefix}/track`` and ``GET {prefix}/instrumentor.js`` are answered
by the middleware itself, with the rules of :class:`~instrumentor.integrations.TrackEndpoint`.
WebSocket and lifespan traffic passes through untouched. Requires ``starlette``
(``pip install 'instrumentor[asgi]'``).
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from instrumentor.integrations._endpoint import TrackEndpoint
from instrumentor.integrations._http import (
    CLIENT_CLOSED,
    ClientDisconnected,
    Incoming,
    Reply,
    aread_limited,
    request_origin,
)
from instrumentor.integrations._identity import (
    IdentityResolver,
    aresolve_identity,
    bind_request_identity,
    reset_quietly,
)

__all__ = ["AnalyticsMiddleware"]


class AnalyticsMiddleware:
    """Pure ASGI middleware: one identity per request, bound for the request, reset after.

    Args:
        app: The ASGI application to wrap.
        resolver: ``request -> Identity | None``, a plain or ``async`` function, given a
            :class:`starlette.requests.Request`. A sync resolver runs on the event loop, so
            it should only read what the request carries (a cookie, a header, ``request.state``
            set by an outer authentication middleware); make it ``async`` if it does I/O. One
            that returns ``None`` (anonymous) leaves the request untracked; one that raises, an
            ``identity_error`` incident, too.
        endpoint: Serve the frontend track endpoint and the JS client with these rules;
            ``None`` (the default) only binds the identity.
    """

    def __init__(
        self,
        app: ASGIApp,
        resolver: IdentityResolver,
        endpoint: TrackEndpoint | None = None,
    ) -> None:
        self.app = app
        self.resolver = resolver
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection: resolve, then answer the endpoint or run the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        identity = await aresolve_identity(self.resolver, request)
        endpoint = self.endpoint
        route = endpoint.route(scope["path"]) if endpoint is not None else None
        if endpoint is not None and route is not None:
            own = request_origin(scope.get("scheme", "http"), request.headers.get("host"))
            incoming = Incoming.from_request(request, own_origin=own)
            if route == "script":
                reply = endpoint.script(incoming)
            else:
                reply = await endpoint.ahandle(incoming, identity, lambda n: _read(request, n))
            await _send(reply, send)
            return
        # Always a token, always a fresh context: what the app binds (a sign-up view binding
        # the new user) ends with the request, also under a server that reuses the task.
        token, _ = bind_request_identity(identity)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_quietly(token, "instrumentor.integrations.asgi")


async def _read(request: Request, limit: int) -> bytes | None:
    try:
        return await aread_limited(request.stream(), limit)
    except ClientDisconnect as exc:
        raise ClientDisconnected from exc


async def _send(reply: Reply, send: Send) -> None:
    if reply.status == CLIENT_CLOSED:  # the client is gone: nothing to send it
        return
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
