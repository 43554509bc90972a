"""Every adapter through real servers on loopback: binding, reset, identity errors, abuse.

The same behaviour is asked of every adapter, so the tests run against each of: the FastAPI test
app under uvicorn, the Flask test app under werkzeug's server, the Django test project under
werkzeug's server (WSGI) and under uvicorn (ASGI). Both WSGI servers answer every request from
one thread, in one context, so an identity left bound by one request would show in the next.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import instrumentor
from instrumentor.testing import CapturedEvents, capture_events
from tests.integrations.servers import Served, raw_request, served, wait_until
from tests.plan import Events

NOBODY: dict[str, Any] = {"user": None, "groups": {}, "traits": {}}


@pytest.fixture(scope="module", params=["fastapi", "flask", "django-wsgi", "django-asgi"])
def server(request: pytest.FixtureRequest) -> Iterator[Served]:
    options = {"rate": 1.0, "burst": 5} if request.param in ("fastapi", "flask") else {}
    with served(request.param, **options) as running:
        yield running


def test_identity_is_bound_for_sync_and_async_views(server: Served) -> None:
    """Sync and async views see the resolved user; a request without one sees none."""
    for path in ("/whoami", "/async"):
        response = httpx.get(f"{server.url}{path}", headers=server.user("usr_1"))
        assert response.json() == {"user": f"{server.kind}-usr_1"}, path
        assert httpx.get(f"{server.url}{path}").json() == {"user": None}, path


def test_the_identity_is_reset_after_each_request_even_when_the_view_raises(
    server: Served,
) -> None:
    """No identity outlives its request, even one whose view raised."""
    # A connection each: uvicorn closes one whose application raised.
    url = server.url
    assert httpx.get(f"{url}/raise", headers=server.user("usr_2")).status_code == 500
    assert httpx.get(f"{url}/whoami").json() == {"user": None}
    assert httpx.get(f"{url}/whoami", headers=server.user("usr_2")).status_code == 200
    assert httpx.get(f"{url}/async").json() == {"user": None}
    assert httpx.get(f"{url}/whoami").json() == {"user": None}


def test_what_a_view_binds_in_an_anonymous_request_ends_with_it(server: Served) -> None:
    """A sign-up view binds the new user itself; the next request must not start with it."""
    for path in ("/signup", "/asignup"):
        signed_up = httpx.get(f"{server.url}{path}").json()
        assert (signed_up["user"], signed_up["groups"]) == ("new_user", {"workspace": "ws_new"})
        assert httpx.get(f"{server.url}/context").json() == NOBODY, path
        bob = httpx.get(f"{server.url}/context", headers=server.user("bob")).json()
        # Bob's own identity, not merged into the new user's workspace and traits.
        assert bob == {"user": f"{server.kind}-bob", "groups": {"account": "acc_1"}, "traits": {}}


# Not under Django's ASGI handler: a sync iterator there is a warning (and an error here).
@pytest.mark.parametrize("server", ["flask", "django-wsgi"], indirect=True)
def test_a_streamed_response_has_no_identity(server: Served) -> None:
    """Documented: the generator runs after the request's context is reset (Starlette's differ)."""
    response = httpx.get(f"{server.url}/stream", headers=server.user("usr_16"))
    assert (response.status_code, response.text) == (200, "None\n")


def test_a_failing_resolver_leaves_the_request_working_and_untracked(
    server: Served, captured: CapturedEvents
) -> None:
    """A raising resolver leaves the page working and the endpoint 401; both are counted."""
    failing = {**server.user("usr_3"), "x-fail": "1"}
    assert httpx.get(f"{server.url}/whoami", headers=failing).json() == {"user": None}
    assert server.post({"event": "Search_Performed"}, failing).status_code == 401
    assert server.post({"event": "Search_Performed"}).status_code == 401  # anonymous
    stats = instrumentor.stats()
    assert (stats["identity_error"], stats["identity_missing"]) == (2, 1)
    captured.assert_nothing_tracked()


def test_a_resolver_failing_on_every_request_reaches_on_error_once(
    server: Served, captured: CapturedEvents
) -> None:
    """A malformed token sent with every request: counted each time, reported once a minute."""
    failing = {**server.user("usr_13"), "x-fail": "1"}
    for _ in range(12):
        assert httpx.get(f"{server.url}/whoami", headers=failing).json() == {"user": None}
    bad = {**server.user("usr_13"), "x-bad-traits": "1"}
    for _ in range(3):
        assert httpx.get(f"{server.url}/whoami", headers=bad).json() == {"user": None}
    assert instrumentor.stats()["identity_error"] == 15
    # One per resolver and kind of failure: the raise, and the traits that are not a mapping.
    messages = [incident.message for incident in captured.incidents]
    assert len(messages) == 2, messages
    assert "raised RuntimeError" in messages[0]
    assert "not a mapping" in messages[1]


def test_an_identity_that_cannot_be_bound_leaves_the_request_working(server: Served) -> None:
    """Even in strict mode: an identity_error, the page answers, the endpoint says 401."""
    bad = {**server.user("usr_11"), "x-bad-traits": "1"}
    with capture_events(strict=True) as captured:
        response = httpx.get(f"{server.url}/whoami", headers=bad)
        assert (response.status_code, response.json()) == (200, {"user": None})
        assert server.post({"event": "Search_Performed"}, bad).status_code == 401
        assert httpx.get(f"{server.url}/whoami").json() == {"user": None}
    captured.assert_nothing_tracked()
    assert instrumentor.stats()["identity_error"] == 2
    assert "invalid_context" not in instrumentor.stats()


def test_anonymous_requests_are_counted_not_reported(
    server: Served, captured: CapturedEvents
) -> None:
    """Health checks, the script, any page: anonymous is normal, not an incident."""
    for path in ("/whoami", "/analytics/instrumentor.js", "/async"):
        assert httpx.get(f"{server.url}{path}").status_code == 200
    for _ in range(5):
        assert server.post({"event": "Search_Performed"}).status_code == 401
    assert instrumentor.stats()["identity_missing"] == 8
    assert instrumentor.stats()["frontend_rejected"] == 5
    # The five 401s reach on_error once: request-driven rejections are sampled.
    assert [incident.kind for incident in captured.incidents] == ["frontend_rejected"]


def test_track_endpoint_tracks_with_the_server_identity(
    server: Served, captured: CapturedEvents
) -> None:
    """The endpoint answers 202 JSON, not cached, and tracks with the server's identity."""
    response = server.post({"event": "Search_Performed"}, {**server.user("usr_4"), "x-ws": "ws_1"})
    assert (response.status_code, response.json()) == (202, {"accepted": True})
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    captured.assert_tracked(
        Events.SEARCH_PERFORMED, user_id=f"{server.kind}-usr_4", group_id="acc_1", times=1
    )


def test_the_script_is_served_with_caching_headers(server: Served) -> None:
    """The browser script is served as JavaScript, 304 on its ETag, 405 to POST."""
    response = httpx.get(f"{server.url}/analytics/instrumentor.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "root.instrumentor = api" in response.text
    again = httpx.get(
        f"{server.url}/analytics/instrumentor.js",
        headers={"if-none-match": response.headers["etag"]},
    )
    assert again.status_code == 304
    assert httpx.post(f"{server.url}/analytics/instrumentor.js").status_code == 405


def test_the_app_still_serves_its_own_routes(server: Served) -> None:
    """Routes outside the endpoint's prefix reach the application."""
    assert httpx.post(f"{server.url}/plain").json() == {"accepted": True}


# -- abuse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"event": "Nope_Happened"}, {"x-user": "usr_5"}, 422),
        ({"event": "Report_Created"}, {"x-user": "usr_5"}, 422),
        ({"event": "Search_Performed"}, {}, 401),
        ({"event": "Search_Performed", "group_id": "acc_2"}, {"x-user": "usr_5"}, 403),
        ({"event": "Search_Performed"}, {"x-user": "usr_5", "content-type": "text/plain"}, 415),
        (
            {"event": "Search_Performed"},
            {"x-user": "usr_5", "content-type": "application/x-www-form-urlencoded"},
            415,
        ),
        ([{"event": "Search_Performed"}], {"x-user": "usr_5"}, 422),
        (b"{", {"x-user": "usr_5"}, 400),
        (b"\xff", {"x-user": "usr_5"}, 400),
        (b"[" * 1000, {"x-user": "usr_5"}, 400),
    ],
    ids=[
        "unknown",
        "backend-only",
        "anonymous",
        "group",
        "text",
        "form",
        "array",
        "truncated",
        "not-utf8",
        "nesting",
    ],
)
def test_abuse(
    server: Served,
    captured: CapturedEvents,
    body: object,
    headers: dict[str, str],
    status: int,
) -> None:
    """Unknown, backend-only, anonymous, foreign-group, non-JSON or malformed posts are refused."""
    if "x-user" in headers:
        headers = {**headers, **server.user(f"{headers['x-user']}-{status}")}
    response = server.post(body, headers)
    assert response.status_code == status
    assert response.json()["accepted"] is False
    captured.assert_nothing_tracked()


def test_other_methods_get_405(server: Served, captured: CapturedEvents) -> None:
    """GET, PUT, DELETE and OPTIONS on the track route are 405 with Allow: POST and no CORS."""
    for method in ("GET", "PUT", "DELETE", "OPTIONS"):
        response = httpx.request(method, f"{server.url}/analytics/track", headers=server.user("u"))
        assert response.status_code == 405, method
        assert response.headers["allow"] == "POST"
        assert "access-control-allow-origin" not in response.headers
    captured.assert_nothing_tracked()


def test_a_body_over_the_limit_is_refused(server: Served, captured: CapturedEvents) -> None:
    """A body over the size limit is a 413 and nothing is tracked."""
    padded = {"event": "Search_Performed", "group_id": "x" * 2000}
    assert server.post(padded, server.user("usr_6")).status_code == 413
    captured.assert_nothing_tracked()


def _status(answer: bytes) -> int:
    assert answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), answer[:200]
    return int(answer.split(b" ", 2)[1])


# Not under Django's ASGI handler: it reads the whole body before any middleware (documented).
@pytest.mark.parametrize("server", ["flask", "django-wsgi"], indirect=True)
def test_a_gigabyte_content_length_is_refused_without_reading(
    server: Served, captured: CapturedEvents
) -> None:
    """A huge Content-Length is answered 413 without reading the body."""
    head = (
        b"POST /analytics/track HTTP/1.1\r\nHost: 127.0.0.1\r\nx-user: usr_7\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
    )
    answer = raw_request(server.url, head, [b" " * 1024])
    assert _status(answer) == 413
    captured.assert_nothing_tracked()


def test_a_chunked_body_is_cut_at_the_limit(server: Served, captured: CapturedEvents) -> None:
    """A chunked body growing past the limit is 413 (400 under Django WSGI, which reads none)."""
    head = (
        b"POST /analytics/track HTTP/1.1\r\nHost: 127.0.0.1\r\nx-user: usr_8\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"200\r\n" + b" " * 512 + b"\r\n"
    answer = raw_request(server.url, head, [chunk] * 8 + [b"0\r\n\r\n"])
    # Django under WSGI reads no body without a Content-Length: an empty body, so 400.
    assert _status(answer) == (400 if server.kind == "django-wsgi" else 413)
    captured.assert_nothing_tracked()


# Not under Django's ASGI handler: it reads the whole body before any middleware runs, and a
# client that goes away meanwhile never reaches a view.
@pytest.mark.parametrize("server", ["fastapi", "flask", "django-wsgi"], indirect=True)
def test_a_client_that_goes_away_mid_body_is_only_counted(server: Served) -> None:
    """A client gone mid-body is counted as disconnected, not rejected or an error."""
    head = (
        b"POST /analytics/track HTTP/1.1\r\nHost: 127.0.0.1\r\nx-user: usr_12\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + b'{"event": "Sea')
    assert wait_until(lambda: "frontend_disconnected" in instrumentor.stats(), timeout=10)
    stats = instrumentor.stats()
    assert stats["frontend_disconnected"] == 1
    assert "internal_error" not in stats
    assert "frontend_rejected" not in stats


def test_bursts_get_429(server: Served, captured: CapturedEvents) -> None:
    """Past the burst a user gets 429 with Retry-After; only accepted posts are tracked."""
    user = server.user("usr_9")
    with httpx.Client(base_url=server.url) as http:
        statuses = [
            http.post("/analytics/track", json={"event": "Search_Performed"}, headers=user)
            for _ in range(8)
        ]
    codes = [response.status_code for response in statuses]
    assert codes[:5] == [202] * 5
    assert 429 in codes[5:]
    limited = next(response for response in statuses if response.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert len(captured.tracks) == codes.count(202)


def test_refused_requests_take_no_token(server: Served, captured: CapturedEvents) -> None:
    """A cross-site text/plain post needs no preflight; it must not drain the user's bucket."""
    user = server.user("usr_10")
    forged = {**user, "content-type": "text/plain", "origin": "https://evil.test"}
    statuses = {server.post({"event": "Search_Performed"}, forged).status_code for _ in range(8)}
    assert statuses == {415}  # 8 > the burst of 5
    assert server.post({"event": "Search_Performed"}, user).status_code == 202
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=1)
