"""What is Flask's own: the extension pattern, async resolvers, threads, MAX_CONTENT_LENGTH."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from flask import Flask, request

import instrumentor
from instrumentor.integrations import Identity, Incoming, TrackEndpoint
from instrumentor.integrations.flask import Analytics
from instrumentor.testing import CapturedEvents
from tests.integrations import flask_app
from tests.integrations.servers import raw_request, serve_wsgi, served
from tests.plan import Events

USER = {"x-user": "usr_1"}


def test_an_async_resolver_runs_with_flask_async(captured: CapturedEvents) -> None:
    """An async resolver works for Flask's sync and async views and for the endpoint."""
    with served("flask", async_resolver=True) as server:
        assert httpx.get(f"{server.url}/whoami", headers=USER).json() == {"user": "usr_1"}
        assert httpx.get(f"{server.url}/async", headers=USER).json() == {"user": "usr_1"}
        assert server.post({"event": "Search_Performed"}, USER).status_code == 202
    assert "identity_error" not in instrumentor.stats()
    captured.assert_tracked(Events.SEARCH_PERFORMED, user_id="usr_1", times=1)


def test_copy_current_request_context_does_not_carry_the_identity() -> None:
    """copy_current_request_context() does not carry the user; with_current_context() does."""
    with served("flask") as server:
        seen = httpx.get(f"{server.url}/thread", headers=USER).json()
    assert seen == {"copy_current_request_context": None, "with_current_context": "usr_1"}


def test_a_lower_max_content_length_answers_413_too(captured: CapturedEvents) -> None:
    """A MAX_CONTENT_LENGTH below the body limit makes plain and chunked posts 413."""
    app = flask_app.build()
    app.config["MAX_CONTENT_LENGTH"] = 100
    body = b'{"event": "Search_Performed", "group_id": "' + b"x" * 200 + b'"}'
    with serve_wsgi(app) as url:
        response = httpx.post(
            f"{url}/analytics/track",
            content=body,
            headers={"content-type": "application/json", **USER},
        )
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
        head = (
            b"POST /analytics/track HTTP/1.1\r\nHost: 127.0.0.1\r\nx-user: usr_1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunked = raw_request(url, head, [b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)])
        assert chunked.split(b" ", 2)[1] == b"413", chunked[:200]
    captured.assert_nothing_tracked()


def test_the_extension_pattern_and_bind_only() -> None:
    """init_app() with prefix=None binds the identity and serves no endpoint."""
    analytics = Analytics(resolver=flask_app.resolve, prefix=None)
    assert analytics.blueprint is None
    app = Flask(__name__)
    analytics.init_app(app)

    @app.get("/whoami")
    def whoami() -> dict[str, object]:
        return {"user": instrumentor.current_context().user_id}

    with serve_wsgi(app) as url:
        assert httpx.get(f"{url}/whoami", headers=USER).json() == {"user": "usr_1"}
        assert httpx.post(f"{url}/analytics/track", json={}, headers=USER).status_code == 404
    assert app.extensions["instrumentor"] is analytics


def test_prefix_and_endpoint_must_agree() -> None:
    """A prefix disagreeing with the endpoint's, or None with an endpoint, raises ValueError."""
    endpoint = TrackEndpoint(prefix="/events")
    assert Analytics(resolver=flask_app.resolve, endpoint=endpoint).endpoint is endpoint
    assert Analytics(resolver=flask_app.resolve, prefix="/events/", endpoint=endpoint)
    assert Analytics(resolver=flask_app.resolve, prefix="/events").endpoint is not None
    for prefix in ("/other", "/analytics"):  # "/analytics" too: the default, given explicitly
        with pytest.raises(ValueError, match="disagree: give the prefix once"):
            Analytics(resolver=flask_app.resolve, prefix=prefix, endpoint=endpoint)
    with pytest.raises(ValueError, match="prefix=None serves no endpoint"):
        Analytics(resolver=flask_app.resolve, prefix=None, endpoint=endpoint)
    assert Analytics(resolver=flask_app.resolve, prefix=None).endpoint is None


def test_an_async_authorize_group_is_refused_at_configuration() -> None:
    """An async authorize_group raises TypeError when the extension is built."""

    async def authorize(identity: Identity, request: Any, level: str, group_id: str) -> bool:
        return True

    endpoint = TrackEndpoint(authorize_group=authorize)
    with pytest.raises(TypeError, match="is async, but Flask runs the track view synchronously"):
        Analytics(resolver=flask_app.resolve, endpoint=endpoint)


NOBODY: dict[str, Any] = {"user": None, "groups": {}, "traits": {}}


def test_a_teardown_that_raises_does_not_leak_the_identity() -> None:
    """Another extension's teardown_request, registered after ours, raises and stops ours."""
    app = flask_app.build()

    @app.teardown_request
    def remove_db_session(error: BaseException | None) -> None:
        if request.headers.get("x-db-down"):
            raise RuntimeError("db connection lost during session.remove()")

    alice = {"x-user": "alice", "x-ws": "ws_alice", "x-email": "alice@example.test"}
    with serve_wsgi(app) as url:  # one thread: the next request runs where this one ran
        response = httpx.get(f"{url}/context", headers={**alice, "x-db-down": "1"})
        assert response.status_code == 500
        assert httpx.get(f"{url}/context").json() == NOBODY
        bob = httpx.get(f"{url}/context", headers={"x-user": "bob"}).json()
    assert bob == {"user": "bob", "groups": {"account": "acc_1"}, "traits": {}}


def test_a_body_another_hook_read_first_is_used(captured: CapturedEvents) -> None:
    """A before_request that calls get_json() spends the stream; werkzeug's cached copy serves."""
    app = Flask(__name__)

    @app.before_request
    def log_json_bodies() -> None:
        if request.is_json:
            request.get_json(silent=True)

    Analytics(app, resolver=flask_app.resolve, endpoint=TrackEndpoint(max_body=64))
    with serve_wsgi(app) as url:
        ok = httpx.post(f"{url}/analytics/track", json={"event": "Search_Performed"}, headers=USER)
        assert (ok.status_code, ok.json()) == (202, {"accepted": True})
        big = {"event": "Search_Performed", "group_id": "x" * 60}
        # Chunked (no Content-Length to refuse it by): the cached body is over the limit.
        chunks = iter([json.dumps(big).encode()])
        too_big = httpx.post(
            f"{url}/analytics/track",
            content=chunks,
            headers={**USER, "content-type": "application/json"},
        )
        assert too_big.status_code == 413
    assert "frontend_disconnected" not in instrumentor.stats()
    captured.assert_tracked(Events.SEARCH_PERFORMED, user_id="usr_1", times=1)


def test_head_answers_carry_the_length_of_the_body_they_leave_out() -> None:
    """HEAD answers carry the Content-Length of the GET or 405 body they omit."""
    with served("flask") as server:
        script = httpx.get(f"{server.url}/analytics/instrumentor.js")
        head = httpx.head(f"{server.url}/analytics/instrumentor.js")
        assert head.headers["content-length"] == str(len(script.content))
        track = httpx.head(f"{server.url}/analytics/track")
    refusal = TrackEndpoint().handle(Incoming("HEAD"), None, lambda limit: b"")
    assert track.status_code == refusal.status == 405
    assert track.headers["content-length"] == dict(refusal.headers)["content-length"] != "0"


def test_a_resolver_returning_junk_is_an_incident(captured: CapturedEvents) -> None:
    """A resolver returning a non-Identity is an identity_error and the post is 401."""

    def junk(request: object) -> Identity:
        return "usr_1"  # type: ignore[return-value]

    app = Flask(__name__)
    Analytics(app, resolver=junk)
    with serve_wsgi(app) as url:
        response = httpx.post(f"{url}/analytics/track", json={"event": "Search_Performed"})
    assert response.status_code == 401
    assert instrumentor.stats()["identity_error"] == 1
    captured.assert_nothing_tracked()
