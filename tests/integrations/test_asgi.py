"""The ASGI middleware and endpoint, through a real uvicorn server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

import instrumentor
from instrumentor.integrations.asgi import AnalyticsMiddleware
from instrumentor.testing import CapturedEvents
from tests.integrations import asgi_app
from tests.integrations.servers import raw_request, serve, wait_until
from tests.plan import Events

USER = {"x-user": "usr_1"}


@pytest.fixture(scope="module", params=[False, True], ids=["sync resolver", "async resolver"])
def client(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    with (
        serve(asgi_app.build(async_resolver=request.param, rate=None)) as url,
        httpx.Client(base_url=url) as http,
    ):
        yield http


def test_identity_is_bound_for_async_and_sync_views(client: httpx.Client) -> None:
    """Async views, sync views and tasks see the resolved user; no header means no user."""
    assert client.get("/async", headers=USER).json() == {"user": "usr_1"}
    assert client.get("/sync", headers=USER).json() == {"user": "usr_1"}
    assert client.get("/task", headers=USER).json() == {"user": "usr_1"}
    assert client.get("/async").json() == {"user": None}


def test_background_tasks_keep_the_context(client: httpx.Client) -> None:
    """Sync and async background tasks, run after the response, still see the user."""
    asgi_app.SEEN.clear()
    client.get("/background", headers=USER)
    # The tasks run after the response is sent: wait (bounded) until both have reported.
    assert wait_until(lambda: len(asgi_app.SEEN) == 2, timeout=10)
    assert sorted(asgi_app.SEEN) == [("async task", "usr_1"), ("sync task", "usr_1")]


def test_a_plain_thread_pool_needs_with_current_context(client: httpx.Client) -> None:
    """A plain pool thread sees no user; with_current_context() carries it there."""
    assert client.get("/pool", headers=USER).json() == {"plain": None, "carried": "usr_1"}


def test_a_failing_resolver_leaves_the_request_working_and_untracked(
    client: httpx.Client, captured: CapturedEvents
) -> None:
    """A raising resolver leaves views working, makes the endpoint 401 and counts it."""
    response = client.get("/async", headers={**USER, "x-fail": "1"})
    assert response.json() == {"user": None}
    track = client.post(
        "/analytics/track", json={"event": "Search_Performed"}, headers={"x-fail": "1"}
    )
    assert track.status_code == 401
    assert instrumentor.stats()["identity_error"] == 2
    captured.assert_nothing_tracked()


def test_track_endpoint_tracks_with_the_server_identity(
    client: httpx.Client, captured: CapturedEvents
) -> None:
    """A POST to the endpoint is 202, not cached, and tracked with the server's identity."""
    response = client.post(
        "/analytics/track", json={"event": "Search_Performed"}, headers={**USER, "x-ws": "ws_1"}
    )
    assert (response.status_code, response.json()) == (202, {"accepted": True})
    assert response.headers["cache-control"] == "no-store"
    captured.assert_tracked(Events.SEARCH_PERFORMED, user_id="usr_1", group_id="acc_1", times=1)


def test_the_script_is_served_with_caching_headers(client: httpx.Client) -> None:
    """The browser script is served as JavaScript with an ETag that yields 304."""
    response = client.get("/analytics/instrumentor.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "root.instrumentor = api" in response.text
    again = client.get(
        "/analytics/instrumentor.js", headers={"if-none-match": response.headers["etag"]}
    )
    assert again.status_code == 304


def test_without_an_endpoint_the_middleware_only_binds(captured: CapturedEvents) -> None:
    """Without an endpoint the middleware binds the identity and serves no track route."""
    app = asgi_app.build()
    app.user_middleware.clear()
    app.add_middleware(AnalyticsMiddleware, resolver=asgi_app.resolve)
    with serve(app) as url:
        assert httpx.get(f"{url}/async", headers=USER).json() == {"user": "usr_1"}
        assert httpx.post(f"{url}/analytics/track", json={}).status_code == 404


# -- abuse ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve(asgi_app.build(rate=1.0, burst=5)) as url:
        yield url


def _post(url: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/analytics/track",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"event": "Nope_Happened"}, USER, 422),
        ({"event": "Report_Created"}, USER, 422),
        ({"event": "Search_Performed"}, {}, 401),
        ({"event": "Search_Performed", "group_id": "acc_2"}, {"x-user": "usr_2"}, 403),
        ({"event": "Search_Performed"}, {"x-user": "usr_3", "content-type": "text/plain"}, 415),
        ([{"event": "Search_Performed"}], {"x-user": "usr_4"}, 422),
    ],
)
def test_abuse_on_a_real_server(
    server: str, captured: CapturedEvents, body: object, headers: dict[str, str], status: int
) -> None:
    """Unknown, backend-only, anonymous, foreign-group, non-JSON or list bodies are refused."""
    response = _post(server, body, headers)
    assert response.status_code == status
    assert response.json()["accepted"] is False
    captured.assert_nothing_tracked()


def test_malformed_json_on_a_real_server(server: str, captured: CapturedEvents) -> None:
    """Truncated, undecodable or deeply nested JSON is a 400 and nothing is tracked."""
    for raw in (b"{", b"\xff", b"[" * 1000):
        response = httpx.post(
            f"{server}/analytics/track",
            content=raw,
            headers={"content-type": "application/json", "x-user": "usr_5"},
        )
        assert response.status_code == 400
    captured.assert_nothing_tracked()


def test_a_gigabyte_content_length_is_refused_without_reading(
    server: str, captured: CapturedEvents
) -> None:
    """A huge Content-Length is answered 413 without reading the body."""
    head = (
        b"POST /analytics/track HTTP/1.1\r\nHost: x\r\nx-user: usr_6\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
    )
    answer = raw_request(server, head, [b" " * 1024])
    assert answer.startswith(b"HTTP/1.1 413")
    captured.assert_nothing_tracked()


def test_a_chunked_body_is_cut_at_the_limit(server: str, captured: CapturedEvents) -> None:
    """A chunked body growing past the limit is answered 413."""
    head = (
        b"POST /analytics/track HTTP/1.1\r\nHost: x\r\nx-user: usr_7\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"200\r\n" + b" " * 512 + b"\r\n"
    answer = raw_request(server, head, [chunk] * 8)
    assert answer.startswith(b"HTTP/1.1 413")
    captured.assert_nothing_tracked()


def test_bursts_get_429_on_a_real_server(server: str, captured: CapturedEvents) -> None:
    """Past the burst a client gets 429 with Retry-After; only accepted posts are tracked."""
    with httpx.Client(base_url=server) as http:
        statuses = [
            http.post(
                "/analytics/track", json={"event": "Search_Performed"}, headers={"x-user": "usr_8"}
            ).status_code
            for _ in range(8)
        ]
        assert statuses[:5] == [202] * 5
        assert 429 in statuses[5:]
        limited = http.post(
            "/analytics/track", json={"event": "Search_Performed"}, headers={"x-user": "usr_8"}
        )
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
    assert len(captured.tracks) == statuses.count(202)


def test_the_app_still_serves_its_own_routes(server: str) -> None:
    """Routes outside the endpoint's prefix reach the application."""
    assert httpx.post(f"{server}/plain").json() == {"accepted": True}
    assert httpx.get(f"{server}/sync", headers=USER).json() == {"user": "usr_1"}
