"""The test project's resolver and views: each view reports the identity it sees."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import async_to_sync
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

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


@csrf_exempt
def plain(request: HttpRequest) -> JsonResponse:
    """The app's own POST route."""
    return JsonResponse({"accepted": True})
