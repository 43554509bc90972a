"""The ASGI middleware in the test's own task (httpx.ASGITransport): is the context reset?

A real server runs every request in a task of its own, so an identity the middleware failed to
reset would vanish with the task, unseen. Here the application runs in the calling task, as it
does under an ASGI server that reuses a task, or behind another middleware that calls it
directly: whatever the middleware leaves bound, the test sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import pytest

import instrumentor
from instrumentor.integrations import Identity, TrackEndpoint
from instrumentor.integrations.asgi import AnalyticsMiddleware
from instrumentor.testing import CapturedEvents
from tests.integrations import asgi_app

USER = {"x-user": "usr_1"}
Scenario = Callable[[httpx.AsyncClient], Awaitable[Any]]


def _in_task(scenario: Scenario) -> tuple[Any, str | None, str | None]:
    """Run ``scenario`` in one task; return its result and the user bound before and after."""
    app = asgi_app.build()

    async def main() -> tuple[Any, str | None, str | None]:
        before = instrumentor.current_context().user_id
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            result = await scenario(client)
        return result, before, instrumentor.current_context().user_id

    return asyncio.run(main())


def test_a_normal_request_leaves_nothing_bound() -> None:
    """A request sees its user and leaves nothing bound in the calling task."""

    async def scenario(client: httpx.AsyncClient) -> Any:
        return (await client.get("/async", headers=USER)).json()

    assert _in_task(scenario) == ({"user": "usr_1"}, None, None)


def test_an_app_that_raises_leaves_nothing_bound() -> None:
    """A view that raises still has its identity reset in the calling task."""

    async def scenario(client: httpx.AsyncClient) -> Any:
        with pytest.raises(RuntimeError, match="the view failed for usr_1"):
            await client.get("/raise", headers=USER)
        return "raised"

    assert _in_task(scenario) == ("raised", None, None)


def test_a_streaming_response_sees_the_identity_and_leaves_nothing_bound() -> None:
    """Every chunk of a streamed response sees the user; nothing stays bound after."""

    async def scenario(client: httpx.AsyncClient) -> Any:
        return (await client.get("/stream", headers=USER)).text

    assert _in_task(scenario) == ("usr_1\nusr_1\nusr_1\n", None, None)


def test_what_a_view_binds_in_an_anonymous_request_ends_with_it() -> None:
    """A user bound by a view in an anonymous request ends with that request."""

    async def scenario(client: httpx.AsyncClient) -> Any:
        signed_up = (await client.get("/asignup")).json()["user"]
        return signed_up, (await client.get("/async")).json()

    assert _in_task(scenario) == (("new_user", {"user": None}), None, None)


def test_a_request_starts_from_an_empty_context() -> None:
    """What is bound around the app (left over, or an outer layer's) is not merged in."""

    async def scenario(client: httpx.AsyncClient) -> Any:
        token = instrumentor.bind_context(user_id="leftover", workspace_id="ws_old")
        try:
            return (await client.get("/context", headers=USER)).json()["groups"]
        finally:
            instrumentor.reset_context(token)

    assert _in_task(scenario) == ({"account": "acc_1"}, None, None)


# -- the endpoint, with inputs a real server would not pass on ----------------------------------


async def _receive_nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/analytics/track",
        "raw_path": b"/analytics/track",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"x-user", b"usr_1"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }


def _call(headers: list[tuple[bytes, bytes]]) -> list[MutableMapping[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the endpoint's requests never reach the app")

    middleware = AnalyticsMiddleware(inner, asgi_app.resolve, TrackEndpoint())
    asyncio.run(middleware(_scope(headers), _receive_nothing, send))
    return sent


def test_a_disconnect_before_the_body_sends_nothing(captured: CapturedEvents) -> None:
    """A client gone before its body is counted as disconnected, with no answer or incident."""
    assert _call([(b"content-length", b"28")]) == []
    stats = instrumentor.stats()
    assert stats["frontend_disconnected"] == 1
    assert "internal_error" not in stats
    assert captured.incidents == []


def test_a_content_length_of_5000_digits_is_413(captured: CapturedEvents) -> None:
    """An absurdly long Content-Length is a 413, not an internal error."""
    sent = _call([(b"content-length", b"9" * 5000)])
    assert sent[0]["status"] == 413
    assert "internal_error" not in instrumentor.stats()


def test_an_unbindable_identity_in_strict_mode_is_not_a_500() -> None:
    """An identity that cannot be bound, even in strict mode, is counted and the view is 200."""
    from instrumentor.testing import capture_events

    def resolve(request: Any) -> Identity:
        return Identity(user_id="usr_1", user_traits=["not a mapping"])  # type: ignore[arg-type]

    app = asgi_app.build()
    app.user_middleware.clear()
    app.add_middleware(AnalyticsMiddleware, resolver=resolve)

    async def main() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/async")).status_code

    with capture_events(strict=True):
        assert asyncio.run(main()) == 200
    assert instrumentor.stats()["identity_error"] == 1
