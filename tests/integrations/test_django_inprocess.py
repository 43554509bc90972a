"""Django's middleware in the test's own task and thread: is the context reset after a request?

Under uvicorn every request runs in a task of its own, and Django's ASGI handler (4.2 aside)
starts one more per request, so an identity the middleware failed to reset vanishes unseen. Here
the middleware runs in the calling task (or thread), as it does under a server or an outer
middleware that reuses them: whatever it leaves bound, the test sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import django
import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncRequestFactory, RequestFactory

import instrumentor
from instrumentor.integrations.django import AnalyticsMiddleware
from tests.integrations.login import context_seen, sign_up

django.setup()  # the test project's settings (tests/integrations/conftest.py)

USER = {"x-user": "usr_1", "x-ws": "ws_1"}
NOBODY: dict[str, Any] = {"user": None, "groups": {}, "traits": {}}


def _whoami(request: HttpRequest) -> HttpResponse:
    return JsonResponse(context_seen())


def _signup(request: HttpRequest) -> HttpResponse:
    return JsonResponse(sign_up())


def _fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(f"the view failed for {context_seen()['user']}")


def _async(view: Callable[[HttpRequest], HttpResponse]) -> Callable[..., Awaitable[HttpResponse]]:
    async def chain(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0)
        return view(request)

    return chain


def _in_task(view: Callable[[HttpRequest], HttpResponse], **headers: str) -> tuple[Any, Any]:
    """One request through the async middleware in this task: (what the view saw, after)."""
    middleware = AnalyticsMiddleware(_async(view))

    async def main() -> tuple[Any, Any]:
        request = AsyncRequestFactory().get("/", headers=headers)
        try:
            seen: Any = (await middleware(request)).content  # type: ignore[misc]
        except RuntimeError as exc:
            seen = str(exc)
        return seen, context_seen()

    return asyncio.run(main())


def _in_thread(view: Callable[[HttpRequest], HttpResponse], **headers: str) -> tuple[Any, Any]:
    """The same through the sync middleware, in this thread."""
    middleware = AnalyticsMiddleware(view)
    try:
        seen: Any = middleware(RequestFactory().get("/", headers=headers)).content  # type: ignore[union-attr]
    except RuntimeError as exc:
        seen = str(exc)
    return seen, context_seen()


@pytest.mark.parametrize("run", [_in_task, _in_thread], ids=["async", "sync"])
def test_a_request_leaves_nothing_bound(run: Any) -> None:
    """A request, sync or async, sees its user and leaves nothing bound after it."""
    seen, after = run(_whoami, **USER)
    assert b'"usr_1"' in seen
    assert after == NOBODY


@pytest.mark.parametrize("run", [_in_task, _in_thread], ids=["async", "sync"])
def test_a_view_that_raises_leaves_nothing_bound(run: Any) -> None:
    """A view that raises still has its identity reset, sync or async."""
    assert run(_fail, **USER) == ("the view failed for usr_1", NOBODY)


@pytest.mark.parametrize("run", [_in_task, _in_thread], ids=["async", "sync"])
def test_what_a_view_binds_in_an_anonymous_request_ends_with_it(run: Any) -> None:
    """A user bound by a view in an anonymous request ends with that request."""
    seen, after = run(_signup)
    assert b'"new_user"' in seen
    assert after == NOBODY


@pytest.mark.parametrize("run", [_in_task, _in_thread], ids=["async", "sync"])
def test_a_request_starts_from_an_empty_context(run: Any) -> None:
    """Whatever is bound around it (left over, or an outer layer's), the request sees none."""
    token = instrumentor.bind_context(user_id="leftover", workspace_id="ws_old")
    try:
        seen, after = run(_whoami, **{"x-user": "bob"})
        assert b'"ws_old"' not in seen
        assert b'"bob"' in seen
        assert after["user"] == "leftover"  # restored as it was, not cleared
    finally:
        instrumentor.reset_context(token)
