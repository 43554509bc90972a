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

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from instrumentor.context import reset_context
from instrumentor.integrations._endpoint import Incoming, Reply, TrackEndpoint, aread_limited
from instrumentor.integrations._identity import IdentityResolver, aresolve_identity
from instrumentor.integrations._script import script_reply

__all__ = ["AnalyticsMiddleware"]


class AnalyticsMiddleware:
    """Pure ASGI middleware: one identity per request, bound for the request, reset after.

    Args:
        app: The ASGI application to wrap.
        resolver: ``request -> Identity | None``, a plain or ``async`` function, given a
            :class:`starlette.requests.Request`. A sync resolver runs on the event loop, so
            it should only read what the request carries (a cookie, a header, ``request.state``
            set by an outer authentication middleware); make it ``async`` if it does I/O. One
            that raises or returns ``None`` leaves the request untracked (an incident).
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
        if endpoint is not None and scope["path"] in (endpoint.track_path, endpoint.script_path):
            headers = request.headers
            if scope["path"] == endpoint.script_path:
                reply = script_reply(request.method, headers.get("if-none-match"))
            else:
                incoming = Incoming(
                    method=request.method,
                    content_type=headers.get("content-type"),
                    content_length=headers.get("content-length"),
                    origin=headers.get("origin"),
                    request=request,
                )
                reply = await endpoint.ahandle(
                    incoming, identity, lambda limit: aread_limited(request.stream(), limit)
                )
            await _send_reply(reply, send, head=request.method == "HEAD")
            return
        token = identity.bind() if identity is not None else None
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                reset_context(token)


async def _send_reply(reply: Reply, send: Send, *, head: bool) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers]
    if reply.status != 304:
        headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else reply.body})
