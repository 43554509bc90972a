"""Django integration: a middleware binds the identity per request; URLs serve the track endpoint.

.. code-block:: python

    # settings.py
    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "instrumentor.integrations.django.AnalyticsMiddleware",  # after authentication
    ]
    INSTRUMENTOR = {"RESOLVER": "myapp.analytics.resolve_identity"}

    # urls.py
    from instrumentor.integrations.django import urls as instrumentor_urls

    urlpatterns = [..., path("analytics/", include(instrumentor_urls))]

:class:`AnalyticsMiddleware` starts every request, anonymous ones too, from an empty context,
calls the resolver once and binds its identity with :func:`~instrumentor.bind_context` while
the rest of the chain runs (sync under WSGI, async under ASGI, where Django's
``sync_to_async`` carries it into sync views), then resets that one token in a ``finally``: what
the views bound (a sign-up view binding the new user) ends with the request too. The
URLs answer ``POST track`` and ``GET instrumentor.js`` with the rules of
:class:`~instrumentor.integrations.TrackEndpoint`. Requires ``django``
(``pip install 'instrumentor[django]'``).

``settings.INSTRUMENTOR`` (read once, re-read when a test overrides it):

================== ==============================================================================
``RESOLVER``       required: ``request -> Identity | None`` (sync or async), or its dotted path
``AUTHORIZE_GROUP`` ``(identity, request, level, group_id) -> bool`` (sync), or its dotted path
``ALLOW_ORIGIN``   ``origin -> bool``, its dotted path, or a list of origins, for origins other
                   than the request's own; default :func:`allowed_origin`
                   (``CSRF_TRUSTED_ORIGINS``, as Django's CSRF check); ``None``: the request's
                   own origin only
``CSRF``           ``True`` to require Django's CSRF token on the track view (default ``False``:
                   the JSON content type is the defence, see the docs)
``MAX_BODY``, ``RATE``, ``BURST``, ``MAX_IDENTITIES``: as :class:`TrackEndpoint` takes them
================== ==============================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Union, cast
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.urls import path
from django.utils.http import is_same_domain
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from instrumentor._context import ContextToken
from instrumentor._diagnostics import Incident
from instrumentor._state import report as report_incident
from instrumentor.integrations._endpoint import DEFAULT_MAX_BODY, TrackEndpoint
from instrumentor.integrations._http import (
    ClientDisconnected,
    Incoming,
    MalformedBody,
    Reply,
    framework_response,
    json_reply,
    read_limited,
)
from instrumentor.integrations._identity import (
    Identity,
    IdentityResolver,
    aresolve_identity,
    bind_request_identity,
    reset_quietly,
    resolve_identity,
)

__all__ = [
    "AnalyticsMiddleware",
    "allowed_origin",
    "app_name",
    "script",
    "track",
    "urlpatterns",
    "urls",
]

_Response = Union[HttpResponse, Awaitable[HttpResponse]]
_IDENTITY = "_instrumentor_identity"
_UNSET = object()
_ENDPOINT_KEYS = {
    "MAX_BODY": "max_body",
    "RATE": "rate",
    "BURST": "burst",
    "MAX_IDENTITIES": "max_identities",
}
_HOOKS = ("RESOLVER", "AUTHORIZE_GROUP", "ALLOW_ORIGIN")
_KEYS = (*_HOOKS, "CSRF", *_ENDPOINT_KEYS)
_DEFAULT_ORIGIN_CHECK = "instrumentor.integrations.django.allowed_origin"
_MIDDLEWARE = "instrumentor.integrations.django.AnalyticsMiddleware"
#: What the resolver usually reads (request.user, request.session) is set by these.
_AUTH_MIDDLEWARE = ("AuthenticationMiddleware", "RemoteUserMiddleware", "SessionMiddleware")


@dataclass(frozen=True)
class _Config:
    resolver: IdentityResolver
    endpoint: TrackEndpoint
    csrf: bool
    async_resolver: bool


def _hook(options: dict[str, Any], key: str, default: object = None) -> Any:
    value = options.get(key, default)
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(f"INSTRUMENTOR[{key!r}]: cannot import {value!r}") from exc
    if key == "ALLOW_ORIGIN" and isinstance(value, (list, tuple, set, frozenset)):
        return value  # the origins themselves; TrackEndpoint checks them
    if value is not None and not callable(value):
        raise ImproperlyConfigured(f"INSTRUMENTOR[{key!r}] must be a callable or its dotted path")
    return value


@functools.lru_cache(maxsize=1)
def _config() -> _Config:
    """``settings.INSTRUMENTOR``, checked; cached until a test changes the settings."""
    options = getattr(settings, "INSTRUMENTOR", None)
    if not isinstance(options, dict) or "RESOLVER" not in options:
        raise ImproperlyConfigured(
            'set INSTRUMENTOR = {"RESOLVER": "yourapp.module.resolve_identity"} in your settings: '
            "a function request -> instrumentor.integrations.Identity | None"
        )
    unknown = sorted(set(options) - set(_KEYS))
    if unknown:
        raise ImproperlyConfigured(
            f"unknown INSTRUMENTOR keys {unknown}; the keys are {', '.join(_KEYS)}"
        )
    endpoint_options = {_ENDPOINT_KEYS[k]: v for k, v in options.items() if k in _ENDPOINT_KEYS}
    # Django's own cap on a request body in memory also bounds the endpoint's, if lower.
    django_cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if django_cap is not None:
        endpoint_options["max_body"] = min(
            endpoint_options.get("max_body", DEFAULT_MAX_BODY), django_cap
        )
    try:
        endpoint = TrackEndpoint(
            authorize_group=_hook(options, "AUTHORIZE_GROUP"),
            allow_origin=_hook(options, "ALLOW_ORIGIN", _DEFAULT_ORIGIN_CHECK),
            **endpoint_options,
        )
        endpoint.require_sync_hooks("Django")  # the track view is sync, under ASGI too
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"INSTRUMENTOR: {exc}") from exc
    resolver = _hook(options, "RESOLVER")
    csrf = bool(options.get("CSRF", False))
    return _Config(resolver, endpoint, csrf, iscoroutinefunction(resolver))


def _settings_changed(*, setting: str, **_: Any) -> None:
    if setting in ("INSTRUMENTOR", "DATA_UPLOAD_MAX_MEMORY_SIZE"):
        _config.cache_clear()


setting_changed.connect(_settings_changed, dispatch_uid="instrumentor.integrations.django")


def allowed_origin(origin: str) -> bool:
    """The default ``ALLOW_ORIGIN``: a foreign ``Origin`` Django's own CSRF check would accept.

    The request's own origin (its scheme and host) never gets here: the track view lets it
    through, as Django's CSRF check does. Any other must be in ``CSRF_TRUSTED_ORIGINS``, exactly
    (``https://app.example.com``) or, for an entry with a ``*``, as a subdomain with the same
    scheme (``https://*.example.com``). ``ALLOWED_HOSTS`` plays no part: it says which hosts
    this server answers for, not which pages may post to it.
    """
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted and "*" not in origin:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    for entry in trusted:
        if "*" in entry:
            wildcard = urlsplit(entry)
            if wildcard.scheme == parts.scheme and is_same_domain(
                parts.netloc, wildcard.netloc.lstrip("*")
            ):
                return True
    return False


def _own_origin(request: HttpRequest) -> str | None:
    """The request's own origin, as Django's CSRF check builds it (``None``: a bad host)."""
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return f"{'https' if request.is_secure() else 'http'}://{host}"


@functools.lru_cache(maxsize=8)
def _check_order(middleware: tuple[str, ...]) -> None:
    """Warn, once per ``MIDDLEWARE`` setting, when authentication comes after ours."""
    if _MIDDLEWARE not in middleware:
        return
    later = [
        name
        for name in middleware[middleware.index(_MIDDLEWARE) + 1 :]
        if name.rsplit(".", 1)[-1].endswith(_AUTH_MIDDLEWARE)
    ]
    if later:
        report_incident(
            Incident(
                "bad_configuration",
                f"{', '.join(later)} comes after {_MIDDLEWARE} in settings.MIDDLEWARE, so the "
                "resolver runs before request.user (or the session) is set and every request "
                f"looks anonymous; move {_MIDDLEWARE} below it",
                site="instrumentor.integrations.django",
            )
        )


class AnalyticsMiddleware:
    """Resolve the identity once per request and bind it while the request is handled.

    Configured by ``settings.INSTRUMENTOR`` (see the module); a missing or wrong setting raises
    ``ImproperlyConfigured`` when Django loads the middleware, at start-up. Sync and async
    capable: under ASGI a sync resolver runs through ``sync_to_async`` (it may use the ORM and
    the session), an ``async def`` one is awaited.

    Args:
        get_response: The rest of the chain, as Django passes it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], _Response]) -> None:
        self.get_response = get_response
        _config()  # fail at start-up, not on the first request
        _check_order(tuple(getattr(settings, "MIDDLEWARE", ())))
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> _Response:
        """Handle one request: resolve and bind, run the chain, reset."""
        if self._async:
            return self._acall(request)
        token = _bind(request, _resolve(request))
        try:
            return self.get_response(request)
        finally:
            reset_quietly(token, _MIDDLEWARE)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        token = _bind(request, await _aresolve(request))
        try:
            response = self.get_response(request)
            assert not isinstance(response, HttpResponse)  # an async chain
            return await response
        finally:
            reset_quietly(token, _MIDDLEWARE)


def _bind(request: HttpRequest, identity: Identity | None) -> ContextToken:
    """Start the request: its identity over an empty context (anonymous: the empty one)."""
    token, bound = bind_request_identity(identity)
    setattr(request, _IDENTITY, bound)  # not bound (reported): the endpoint must not track it
    return token


def _resolve(request: HttpRequest) -> Identity | None:
    config = _config()
    if config.async_resolver:
        identity = async_to_sync(aresolve_identity)(config.resolver, request)
    else:
        identity = resolve_identity(config.resolver, request)
    setattr(request, _IDENTITY, identity)
    return identity


async def _aresolve(request: HttpRequest) -> Identity | None:
    config = _config()
    if config.async_resolver:
        identity = await aresolve_identity(config.resolver, request)
    else:
        identity = await sync_to_async(resolve_identity)(config.resolver, request)
    setattr(request, _IDENTITY, identity)
    return identity


# -- the views -------------------------------------------------------------------------------


def _incoming(request: HttpRequest) -> Incoming:
    # The page's own origin is allowed, as Django's CSRF check allows it; ALLOW_ORIGIN is
    # asked about the others only.
    return Incoming.from_request(request, own_origin=_own_origin(request))


def _read(request: HttpRequest, limit: int) -> bytes | None:
    # request.read() stops at Content-Length under WSGI and never builds request.body, so
    # nothing checks DATA_UPLOAD_MAX_MEMORY_SIZE behind the endpoint's own, smaller limit.
    try:
        body = read_limited(request, limit)
    except (UnreadablePostError, ConnectionError, TimeoutError) as exc:
        raise ClientDisconnected from exc
    except OSError as exc:  # a WSGI server's dechunker: "Invalid chunk header", and the like
        raise MalformedBody(str(exc)) from exc
    length = request.META.get("CONTENT_LENGTH") or ""
    if (
        body is not None
        and "wsgi.input" in request.META  # under ASGI Django has the whole body already
        and "HTTP_TRANSFER_ENCODING" not in request.META
        and length.isdigit()
        and len(body) < int(length)
    ):
        # Django's WSGI stream stops at Content-Length; short of it, the socket ended: the
        # server's end-of-input, which werkzeug's own stream calls a disconnect too.
        raise ClientDisconnected(f"{len(body)} of {length} bytes arrived")
    return body


def _unconfigured(request: HttpRequest, error: ImproperlyConfigured) -> HttpResponse:
    """A 503 that says analytics is unavailable; the log and ``on_error`` say why."""
    report_incident(
        Incident(
            "bad_configuration",
            f"the instrumentor views answer 503: {error}",
            site="instrumentor.integrations.django",
            error=error,
        ),
        key="django views",
        sampled=True,
    )
    detail = "analytics is not configured on this server"
    reply = json_reply(503, {"accepted": False, "error": "not_configured", "detail": detail})
    return _response(reply.sized(request.method or "GET"))


def _track(request: HttpRequest) -> HttpResponse:
    try:
        config = _config()
    except ImproperlyConfigured as exc:
        return _unconfigured(request, exc)
    found = getattr(request, _IDENTITY, _UNSET)
    # Without the middleware installed, the view resolves the identity itself.
    identity = _resolve(request) if found is _UNSET else cast("Identity | None", found)
    reply = config.endpoint.handle(_incoming(request), identity, lambda n: _read(request, n))
    return _response(reply)


_track_with_csrf = csrf_protect(_track)


@csrf_exempt
def track(request: HttpRequest) -> HttpResponse:
    """``POST track``: the frontend track endpoint.

    Exempt from Django's CSRF check unless ``INSTRUMENTOR["CSRF"]`` is true: only a JSON body
    is accepted, which a cross-site page cannot send without a CORS preflight.
    """
    try:
        csrf = _config().csrf
    except ImproperlyConfigured as exc:
        return _unconfigured(request, exc)
    return _track_with_csrf(request) if csrf else _track(request)


@csrf_exempt  # read-only: other methods get 405, not Django's CSRF 403
def script(request: HttpRequest) -> HttpResponse:
    """``GET instrumentor.js``: the JS client, with ``ETag`` and ``Cache-Control``."""
    try:
        endpoint = _config().endpoint
    except ImproperlyConfigured as exc:
        return _unconfigured(request, exc)
    return _response(endpoint.script(_incoming(request)))


def _response(reply: Reply) -> HttpResponse:
    response = framework_response(reply, lambda body, status: HttpResponse(body, status=status))
    # Django logs every 4xx as a WARNING on django.request unless the response says it was
    # logged: the endpoint's refusals are counted and logged, sampled, by instrumentor already.
    # Django has no public switch: log_response() (django.utils.log) reads this flag, the one
    # it sets itself. A write, not a read; the alternative, a filter on django.request, would
    # change the process's logging for everyone. Pinned by test_django.py.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


#: The namespace of the URLs: ``reverse("instrumentor:track")``.
app_name = "instrumentor"
#: ``track`` and ``instrumentor.js``, for ``include()`` under the prefix of your choice.
urlpatterns = [
    path("track", track, name="track"),
    path("instrumentor.js", script, name="script"),
]
#: ``path("analytics/", include(urls))``: the patterns with their namespace.
urls = (urlpatterns, app_name)
