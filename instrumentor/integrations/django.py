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

:class:`AnalyticsMiddleware` calls the resolver once per request and binds its identity with
:func:`~instrumentor.bind_context` while the rest of the chain runs (sync under WSGI, async
under ASGI, where Django's ``sync_to_async`` carries it into sync views), then resets it. The
URLs answer ``POST track`` and ``GET instrumentor.js`` with the rules of
:class:`~instrumentor.integrations.TrackEndpoint`. Requires ``django``
(``pip install 'instrumentor[django]'``).

``settings.INSTRUMENTOR`` (read once, re-read when a test overrides it):

================== ==============================================================================
``RESOLVER``       required: ``request -> Identity | None`` (sync or async), or its dotted path
``AUTHORIZE_GROUP`` ``(identity, request, level, group_id) -> bool`` (sync), or its dotted path
``ALLOW_ORIGIN``   ``origin -> bool`` or its dotted path; default :func:`allowed_origin`
                   (``ALLOWED_HOSTS`` and ``CSRF_TRUSTED_ORIGINS``); ``None`` checks no origin
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
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.http.request import validate_host
from django.urls import path
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from instrumentor.context import ContextToken, reset_context
from instrumentor.diagnostics import Incident, report_safely
from instrumentor.integrations._endpoint import TrackEndpoint
from instrumentor.integrations._http import (
    ClientDisconnected,
    Incoming,
    Reply,
    json_reply,
    read_limited,
)
from instrumentor.integrations._identity import (
    Identity,
    IdentityResolver,
    aresolve_identity,
    bind_identity,
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
        endpoint_options["max_body"] = min(endpoint_options.get("max_body", 1024), django_cap)
    try:
        endpoint = TrackEndpoint(
            authorize_group=_hook(options, "AUTHORIZE_GROUP"),
            allow_origin=_hook(options, "ALLOW_ORIGIN", _DEFAULT_ORIGIN_CHECK),
            **endpoint_options,
        )
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
    """The default ``ALLOW_ORIGIN``: an ``Origin`` Django itself would accept.

    Its host must pass ``ALLOWED_HOSTS`` (with Django's defaults under ``DEBUG``), or the
    origin be listed in ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` matches subdomains).
    """
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if validate_host(host, allowed_hosts):
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        scheme, _, netloc = trusted.partition("://")
        if trusted == origin or (
            netloc.startswith("*.") and scheme == parts.scheme and parts.netloc.endswith(netloc[1:])
        ):
            return True
    return False


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
            if token is not None:
                reset_context(token)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        token = _bind(request, await _aresolve(request))
        try:
            response = self.get_response(request)
            assert not isinstance(response, HttpResponse)  # an async chain
            return await response
        finally:
            if token is not None:
                reset_context(token)


def _bind(request: HttpRequest, identity: Identity | None) -> ContextToken | None:
    token = bind_identity(identity)
    if token is None:  # not bound (reported): the endpoint must not track it either
        setattr(request, _IDENTITY, None)
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
    return Incoming.from_headers(request.method or "GET", request.headers.get, request)


def _read(request: HttpRequest, limit: int) -> bytes | None:
    # request.read() stops at Content-Length under WSGI and never builds request.body, so
    # nothing checks DATA_UPLOAD_MAX_MEMORY_SIZE behind the endpoint's own, smaller limit.
    try:
        return read_limited(request, limit)
    except (UnreadablePostError, OSError) as exc:
        raise ClientDisconnected from exc


def _unconfigured(request: HttpRequest, error: ImproperlyConfigured) -> HttpResponse:
    """A 503 that says analytics is unavailable; the log and ``on_error`` say why."""
    report_safely(
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
    response = HttpResponse(reply.body, status=reply.status)
    if not any(name == "content-type" for name, _ in reply.headers):
        del response["content-type"]
    for name, value in reply.headers:
        response[name] = value
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
