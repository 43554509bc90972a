"""Flask integration: bind the identity per request, serve the track endpoint and the JS client.

.. code-block:: python

    from flask import Flask, Request
    from instrumentor.integrations import Identity
    from instrumentor.integrations.flask import Analytics

    def resolve(request: Request) -> Identity | None:
        user = current_user_from(request)  # whatever your authentication provides
        return Identity(user_id=user.id, account_id=user.account_id) if user else None

    analytics = Analytics(resolver=resolve)  # the extension pattern: no app yet
    app = Flask(__name__)
    analytics.init_app(app)

For every request the resolver is called once (``before_request``); its identity is bound with
:func:`~instrumentor.bind_context` for the request, sync and async views alike, and reset in
``teardown_request``, also when the view raises. The blueprint :attr:`Analytics.blueprint`
answers ``POST {prefix}/track`` and ``GET {prefix}/instrumentor.js`` with the rules of
:class:`~instrumentor.integrations.TrackEndpoint`. Requires ``flask``
(``pip install 'instrumentor[flask]'``; ``flask[async]`` for async views and resolvers).
"""

from __future__ import annotations

import functools

from flask import Blueprint, Flask, Response, g, request
from werkzeug.exceptions import ClientDisconnected as WerkzeugDisconnected
from werkzeug.exceptions import RequestEntityTooLarge

from instrumentor.context import reset_context
from instrumentor.integrations._endpoint import TrackEndpoint
from instrumentor.integrations._http import ClientDisconnected, Incoming, Reply, read_limited
from instrumentor.integrations._identity import (
    Identity,
    IdentityResolver,
    bind_identity,
    resolve_identity,
)

__all__ = ["Analytics"]

#: Every method goes to the endpoint, which answers 405 itself (no automatic OPTIONS: a CORS
#: preflight must not succeed).
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_IDENTITY = "_instrumentor_identity"
_TOKEN = "_instrumentor_token"


class Analytics:
    """The Flask extension: one identity per request, and the frontend track endpoint.

    Args:
        app: The application; or leave it out and call :meth:`init_app` later.
        resolver: ``request -> Identity | None``, given :data:`flask.request`. A plain
            function, or an ``async`` one with ``flask[async]`` installed. One that raises or
            returns ``None`` leaves the request working and untracked (an incident).
        prefix: Where the blueprint serves ``/track`` and ``/instrumentor.js``; ``None``
            serves nothing and only binds the identity.
        endpoint: The endpoint's rules (limits, hooks); by default ``TrackEndpoint(prefix=prefix)``.
            Its own ``prefix`` is used when it is given.

    Raises:
        ValueError: If ``prefix`` and ``endpoint.prefix`` disagree.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        resolver: IdentityResolver,
        prefix: str | None = "/analytics",
        endpoint: TrackEndpoint | None = None,
    ) -> None:
        if endpoint is not None and prefix not in ("/analytics", endpoint.prefix):
            raise ValueError(
                f"prefix {prefix!r} and endpoint.prefix {endpoint.prefix!r} disagree; "
                "give the prefix to TrackEndpoint only"
            )
        if endpoint is None and prefix is not None:
            endpoint = TrackEndpoint(prefix=prefix)
        self.resolver = resolver
        self.endpoint = endpoint
        #: The blueprint with the two routes (``None`` without an endpoint): exempt it from
        #: CSRF protection by name or object, e.g. ``csrf.exempt(analytics.blueprint)``.
        self.blueprint: Blueprint | None = None
        if endpoint is not None:
            self.blueprint = Blueprint("instrumentor", __name__)
            for rule, view in (("/track", self._track), ("/instrumentor.js", self._script)):
                self.blueprint.add_url_rule(
                    rule,
                    view.__name__.strip("_"),
                    view,
                    methods=_METHODS,
                    provide_automatic_options=False,
                )
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install the extension on ``app``: the request hooks and the blueprint."""
        # An async resolver runs through asgiref (flask[async]); without it this fails here,
        # at start-up, rather than on every request.
        resolve = app.ensure_sync(self.resolver)
        if resolve is not self.resolver:  # keep the resolver's name for the incident messages
            resolve = functools.wraps(self.resolver)(functools.partial(resolve))
        self._resolve = resolve
        app.extensions["instrumentor"] = self
        app.before_request(self._bind)
        app.teardown_request(self._reset)
        if self.blueprint is not None and self.endpoint is not None:
            app.register_blueprint(self.blueprint, url_prefix=self.endpoint.prefix)

    # -- request hooks ------------------------------------------------------------------------

    def _bind(self) -> None:
        identity = resolve_identity(
            self._resolve,
            request._get_current_object(),  # type: ignore[attr-defined]
        )
        token = bind_identity(identity)
        setattr(g, _IDENTITY, identity if token is not None else None)
        setattr(g, _TOKEN, token)

    def _reset(self, error: BaseException | None = None) -> None:
        token = g.pop(_TOKEN, None)
        if token is not None:
            reset_context(token)

    # -- views --------------------------------------------------------------------------------

    def _track(self) -> Response:
        assert self.endpoint is not None  # the route exists only with an endpoint
        identity: Identity | None = g.get(_IDENTITY)
        return _response(self.endpoint.handle(_incoming(), identity, _read_body))

    def _script(self) -> Response:
        assert self.endpoint is not None
        return _response(self.endpoint.script(_incoming()))


def _incoming() -> Incoming:
    current = request._get_current_object()  # type: ignore[attr-defined]
    return Incoming.from_headers(request.method, request.headers.get, current)


def _read_body(limit: int) -> bytes | None:
    # request.stream stops at Content-Length and never buffers; the app's MAX_CONTENT_LENGTH,
    # if lower than the endpoint's limit, is enforced by it while reading (a 413 here too).
    try:
        return read_limited(request.stream, limit)
    except RequestEntityTooLarge:
        return None
    except WerkzeugDisconnected as exc:
        raise ClientDisconnected from exc


def _response(reply: Reply) -> Response:
    response = Response(reply.body, status=reply.status, headers=list(reply.headers))
    if not any(name == "content-type" for name, _ in reply.headers):
        del response.headers["content-type"]
    return response
