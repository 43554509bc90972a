"""The test project's resolver and views: each view reports the identity it sees."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.template import engines
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie

import instrumentor
from instrumentor.integrations import Identity
from tests.integrations.login import context_seen, identity_from, sign_up

_pool = ThreadPoolExecutor(max_workers=1)


def resolve_identity(request: HttpRequest) -> Identity | None:
    """The fake login of :mod:`tests.integrations.login`, from the request's headers."""
    return identity_from(request.headers.get)


def _user() -> str | None:
    user = instrumentor.current_context().user_id
    return None if user is None else str(user)


def whoami(request: HttpRequest) -> JsonResponse:
    """A sync view (under ASGI Django runs it in a thread, with the context copied)."""
    return JsonResponse({"user": _user()})


async def async_view(request: HttpRequest) -> JsonResponse:
    """An async view (under WSGI Django runs it in an event loop of its own)."""
    await asyncio.sleep(0)
    return JsonResponse({"user": _user()})


def fail(request: HttpRequest) -> JsonResponse:
    """A view that raises: the identity must be reset all the same."""
    raise RuntimeError(f"the view failed for {_user()}")


def thread(request: HttpRequest) -> JsonResponse:
    """Work handed to a plain thread pool, to async_to_sync, and to with_current_context."""

    async def in_async() -> str | None:
        return _user()

    return JsonResponse(
        {
            "pool": _pool.submit(_user).result(10),
            "async_to_sync": async_to_sync(in_async)(),
            "with_current_context": _pool.submit(instrumentor.with_current_context(_user)).result(
                10
            ),
        }
    )


def context(request: HttpRequest) -> JsonResponse:
    """The whole bound context."""
    return JsonResponse(context_seen())


def signup(request: HttpRequest) -> JsonResponse:
    """A sign-up view: binds the new user in an anonymous request."""
    return JsonResponse(sign_up())


async def asignup(request: HttpRequest) -> JsonResponse:
    """The same, async (under WSGI, async_to_sync copies what it binds back to the thread)."""
    return JsonResponse(sign_up())


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """A streamed response: its generator runs after the middleware has reset the context."""
    return StreamingHttpResponse(f"{_user()}\n" for _ in range(1))


@csrf_exempt
def plain(request: HttpRequest) -> JsonResponse:
    """The app's own POST route."""
    return JsonResponse({"accepted": True})


#: The script tags of the docs' "CSRF with Django" (the token in the page, or Django's cookie).
SCRIPT_WITH_TOKEN = """<script src="{% url 'instrumentor:script' %}" defer
        data-csrf-header="X-CSRFToken" data-csrf-token="{{ csrf_token }}"></script>"""
SCRIPT_WITH_COOKIE = """<script src="{% url 'instrumentor:script' %}" defer
        data-csrf-header="X-CSRFToken" data-csrf-cookie="csrftoken"></script>"""
_BARE = """<script src="{% url 'instrumentor:script' %}" defer></script>"""


def _page(request: HttpRequest, script: str) -> HttpResponse:
    template = engines["django"].from_string(f"<!doctype html><title>page</title>{script}")
    return HttpResponse(template.render({}, request))


def page(request: HttpRequest) -> HttpResponse:
    """A page with the JS client and the CSRF token in it (``?bare=1``: without a token)."""
    return _page(request, _BARE if request.GET.get("bare") else SCRIPT_WITH_TOKEN)


@ensure_csrf_cookie
def cookie_page(request: HttpRequest) -> HttpResponse:
    """A page whose client reads the token from Django's cookie, which the decorator sets."""
    return _page(request, SCRIPT_WITH_COOKIE)
