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

Every request starts from an empty context, anonymous ones too: a WSGI wrapper around
``app.wsgi_app`` binds it and resets it in a ``finally``, whatever another extension's
``teardown_request`` raises. Within it the resolver is called once (``before_request``) and its
identity bound with :func:`~instrumentor.bind_context`, for sync and async views alike; whatever
a view binds (a sign-up view binding the new user) ends with the request too. The blueprint
:attr:`Analytics.blueprint` answers ``POST {prefix}/track`` and ``GET {prefix}/instrumentor.js``
with the rules of :class:`~instrumentor.integrations.TrackEndpoint`. Requires ``flask``
(``pip install 'instrumentor[flask]'``; ``flask[async]`` for async views and resolvers).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal

from flask import Blueprint, Flask, Response, g, request
from werkzeug.exceptions import ClientDisconnected as WerkzeugDisconnected
from werkzeug.exceptions import RequestEntityTooLarge

from instrumentor.integrations._endpoint import TrackEndpoint
from instrumentor.integrations._http import (
    ClientDisconnected,
    Incoming,
    MalformedBody,
    Reply,
    framework_response,
    read_limited,
    request_origin,
)
from instrumentor.integrations._identity import (
    Identity,
    IdentityResolver,
    bind_request_identity,
    reset_quietly,
    resolve_identity,
)

__all__ = ["Analytics"]

#: Every method goes to the endpoint, which answers 405 itself (no automatic OPTIONS: a CORS
#: preflight must not succeed).
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_IDENTITY = "_instrumentor_identity"
_TOKEN = "_instrumentor_token"
_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


class Analytics:
    """The Flask extension: one identity per request, and the frontend track endpoint.

    Args:
        app: The application; or leave it out and call :meth:`init_app` later.
        resolver: ``request -> Identity | None``, given :data:`flask.request`. A plain
            function, or an ``async`` one with ``flask[async]`` installed. One that raises or
            returns ``None`` leaves the request working and untracked (an incident).
        prefix: Where the blueprint serves ``/track`` and ``/instrumentor.js`` (default
            ``"/analytics"``); ``None`` serves nothing and only binds the identity. Leave it
            out when you give ``endpoint``: the endpoint's own prefix is used.
        endpoint: The endpoint's rules (limits, hooks); by default ``TrackEndpoint(prefix=prefix)``.
            Its ``authorize_group`` must be a plain function: the track view is sync.

    Raises:
        ValueError: If both ``prefix`` and ``endpoint`` are given and the prefixes differ
            (``prefix=None`` with an endpoint included).
        TypeError: If ``endpoint.authorize_group`` is ``async``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        resolver: IdentityResolver,
        prefix: str | Literal[_Unset.UNSET] | None = _UNSET,
        endpoint: TrackEndpoint | None = None,
    ) -> None:
        if endpoint is not None:
            if prefix is not _UNSET and (prefix is None or prefix.rstrip("/") != endpoint.prefix):
                raise ValueError(
                    f"prefix={prefix!r} and endpoint.prefix={endpoint.prefix!r} disagree: give "
                    "the prefix once, as TrackEndpoint(prefix=...), and leave prefix out"
                    + (
                        " (prefix=None serves no endpoint: then give no endpoint)"
                        if not prefix
                        else ""
                    )
                )
            endpoint.require_sync_hooks("Flask")
        elif prefix is not None:
            endpoint = TrackEndpoint(prefix="/analytics" if prefix is _UNSET else prefix)
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
        """Install the extension on ``app``: the WSGI wrapper, the request hooks, the blueprint."""
        # An async resolver runs through asgiref (flask[async]); without it this fails here,
        # at start-up, rather than on every request.
        resolve = app.ensure_sync(self.resolver)
        if resolve is not self.resolver:  # keep the resolver's name for the incident messages
            resolve = functools.wraps(self.resolver)(functools.partial(resolve))
        self._resolve = resolve
        app.extensions["instrumentor"] = self
        app.wsgi_app = _fresh_context(app.wsgi_app)  # type: ignore[method-assign,assignment]
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
        token, bound = bind_request_identity(identity)
        setattr(g, _IDENTITY, bound)
        setattr(g, _TOKEN, token)

    def _reset(self, error: BaseException | None = None) -> None:
        # The WSGI wrapper resets in any case; this covers requests dispatched without it
        # (app.test_request_context() and preprocess_request(), say).
        reset_quietly(g.pop(_TOKEN, None), "instrumentor.integrations.flask")

    # -- views --------------------------------------------------------------------------------

    def _track(self) -> Response:
        assert self.endpoint is not None  # the route exists only with an endpoint
        identity: Identity | None = g.get(_IDENTITY)
        return _response(self.endpoint.handle(_incoming(), identity, _read_body))

    def _script(self) -> Response:
        assert self.endpoint is not None
        return _response(self.endpoint.script(_incoming()))


def _fresh_context(wsgi_app: _WSGIApp) -> _WSGIApp:
    """Run each request in an empty context, reset in a ``finally`` (teardowns may raise)."""

    @functools.wraps(wsgi_app)
    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        token, _ = bind_request_identity(None)
        try:
            return wsgi_app(environ, start_response)
        finally:
            reset_quietly(token, "instrumentor.integrations.flask")

    return wrapper


def _incoming() -> Incoming:
    # The scheme and Host as the WSGI server (or werkzeug's ProxyFix) saw them.
    own = request_origin(request.scheme, request.headers.get("host"))
    current = request._get_current_object()  # type: ignore[attr-defined]
    return Incoming.from_request(current, own_origin=own)


def _read_body(limit: int) -> bytes | None:
    # Read by another hook already (request.get_json() in a before_request, say): the stream is
    # spent, so take what werkzeug cached rather than see a short body and call it a disconnect.
    # _cached_data is werkzeug's own attribute (get_data(cache=True) sets it); tested.
    cached = getattr(request, "_cached_data", None)
    if isinstance(cached, bytes):
        return cached if len(cached) <= limit else None
    # request.stream stops at Content-Length and never buffers; the app's MAX_CONTENT_LENGTH,
    # if lower than the endpoint's limit, is enforced by it while reading (a 413 here too).
    try:
        return read_limited(request.stream, limit)
    except RequestEntityTooLarge:
        return None
    except (WerkzeugDisconnected, ConnectionError, TimeoutError) as exc:
        raise ClientDisconnected from exc
    except OSError as exc:  # werkzeug's dechunker: "Invalid chunk header", and the like
        raise MalformedBody(str(exc)) from exc


def _response(reply: Reply) -> Response:
    return framework_response(reply, lambda body, status: Response(body, status=status))
