"""The framework-agnostic track endpoint: every rule, through TrackEndpoint.handle/ahandle."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import instrumentor
from instrumentor.integrations import (
    CLIENT_CLOSED,
    ClientDisconnected,
    Identity,
    Incoming,
    Reply,
    TrackEndpoint,
    aread_limited,
    read_limited,
)
from instrumentor.testing import CapturedEvents, capture_events
from tests.plan import Events

USER = Identity(user_id="usr_1", account_id="acc_1", workspace_id="ws_1", project_id="proj_1")
JSON = "application/json"


def post(
    endpoint: TrackEndpoint,
    body: bytes | dict[str, Any],
    *,
    identity: Identity | None = USER,
    content_type: str | None = JSON,
    method: str = "POST",
    origin: str | None = None,
    length: str | None = "auto",
    own_origin: str | None = None,
) -> Reply:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    incoming = Incoming(
        method=method,
        content_type=content_type,
        content_length=str(len(raw)) if length == "auto" else length,
        origin=origin,
        request="the-request",
        own_origin=own_origin,
    )
    return endpoint.handle(incoming, identity, lambda limit: read_limited(io.BytesIO(raw), limit))


def test_frontend_event_is_tracked_with_the_server_identity(captured: CapturedEvents) -> None:
    """A frontend event is accepted (202) and tracked and identified with the server's identity."""
    reply = post(TrackEndpoint(), {"event": "Search_Performed"})
    assert (reply.status, reply.json()) == (202, {"accepted": True})
    captured.assert_tracked(Events.SEARCH_PERFORMED, user_id="usr_1", group_id="acc_1", times=1)
    captured.assert_identified("usr_1")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"event": "Nope_Happened"}, 422, "unknown_event"),
        ({"event": "Report_Created"}, 422, "event_not_allowed"),
        ({"event": ""}, 422, "invalid_body"),
        ({"event": 42}, 422, "invalid_body"),
        ({"event": ["Search_Performed"]}, 422, "invalid_body"),
        ({}, 422, "invalid_body"),
        ({"event": "Search_Performed", "properties": {"a": 1}}, 422, "invalid_body"),
        ({"event": "Search_Performed", "group_id": ""}, 422, "invalid_body"),
        ({"event": "Search_Performed", "group_id": True}, 422, "invalid_body"),
        ({"event": "Search_Performed", "group_id": "acc_2"}, 403, "group_not_allowed"),
        (b"[1, 2]", 422, "invalid_body"),
        (b'"Search_Performed"', 422, "invalid_body"),
        (b"null", 422, "invalid_body"),
        (b"{not json", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b'{"event": NaN}', 400, "malformed_json"),
        (b"\xff\xfe{}", 400, "malformed_json"),
        (b"[" * 1000, 400, "malformed_json"),
    ],
)
def test_bad_bodies_are_refused_and_nothing_is_tracked(
    captured: CapturedEvents, body: bytes | dict[str, Any], status: int, code: str
) -> None:
    """Unknown, backend-only or malformed events and foreign groups are refused with their code."""
    reply = post(TrackEndpoint(), body)
    assert reply.status == status
    assert reply.json()["error"] == code
    assert reply.json()["accepted"] is False
    captured.assert_nothing_tracked()


def test_a_depth_bomb_under_a_large_limit_is_a_400(captured: CapturedEvents) -> None:
    """Deeply nested JSON within a large body limit is a 400, not a crash."""
    bomb = b'{"event": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    reply = post(TrackEndpoint(max_body=300_000), bomb)
    assert (reply.status, reply.json()["error"]) == (400, "malformed_json")
    captured.assert_nothing_tracked()


def test_the_reason_names_the_event_without_echoing_huge_input(captured: CapturedEvents) -> None:
    """The refusal detail names the event and the rule, cut short for huge input."""
    reply = post(TrackEndpoint(max_body=4096), {"event": "X" * 3000})
    assert reply.status == 422
    detail = reply.json()["detail"]
    assert "not in the tracking plan" in detail
    assert len(detail) < 200
    unknown = post(TrackEndpoint(), {"event": "Nope_Happened"}).json()["detail"]
    assert '"Nope_Happened"' in unknown
    not_allowed = post(TrackEndpoint(), {"event": "Report_Created"}).json()["detail"]
    assert "frontend=True" in not_allowed


def test_missing_identity_is_401(captured: CapturedEvents) -> None:
    """No identity, or an empty one, is a 401 and nothing is tracked."""
    for identity in (None, Identity()):
        reply = post(TrackEndpoint(), {"event": "Search_Performed"}, identity=identity)
        assert (reply.status, reply.json()["error"]) == (401, "unauthenticated")
    captured.assert_nothing_tracked()


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/json; charset=latin-1",
        "application/jsonp",
        "text/json",
    ],
)
def test_wrong_content_types_are_415(captured: CapturedEvents, content_type: str | None) -> None:
    """Any content type but JSON in UTF-8 is a 415."""
    reply = post(TrackEndpoint(), {"event": "Search_Performed"}, content_type=content_type)
    assert (reply.status, reply.json()["error"]) == (415, "unsupported_media_type")
    captured.assert_nothing_tracked()


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=UTF-8"])
def test_json_content_types_are_accepted(captured: CapturedEvents, content_type: str) -> None:
    """application/json is accepted in any case and with a UTF-8 charset."""
    assert (
        post(TrackEndpoint(), {"event": "Search_Performed"}, content_type=content_type).status
        == 202
    )


class _Endless(io.RawIOBase):
    """A body stream that never ends, counting what was read from it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        buffer[:size] = b" " * size
        self.read_bytes += size
        return size


def test_a_large_body_is_refused_while_reading(captured: CapturedEvents) -> None:
    """An endless body is cut at the limit (413) after reading at most one byte past it."""
    endless = _Endless()
    incoming = Incoming("POST", JSON, None)
    reply = TrackEndpoint().handle(incoming, USER, lambda limit: read_limited(endless, limit))
    assert (reply.status, reply.json()["error"]) == (413, "payload_too_large")
    assert endless.read_bytes <= 1025
    captured.assert_nothing_tracked()


def test_a_large_content_length_is_refused_before_reading(captured: CapturedEvents) -> None:
    """A Content-Length over the limit is 413 and an unreadable one 400, before any read."""

    def never(limit: int) -> bytes | None:
        raise AssertionError("the body must not be read")

    endpoint = TrackEndpoint()
    reply = endpoint.handle(Incoming("POST", JSON, str(10**9)), USER, never)
    assert reply.status == 413
    bad = endpoint.handle(Incoming("POST", JSON, "12abc"), USER, never)
    assert bad.status == 400
    captured.assert_nothing_tracked()


def test_async_reading_stops_at_the_limit(captured: CapturedEvents) -> None:
    """ahandle() stops pulling chunks once the body passes the limit and answers 413."""
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b" " * 100

    reply = asyncio.run(
        TrackEndpoint().ahandle(
            Incoming("POST", JSON), USER, lambda limit: aread_limited(chunks(), limit)
        )
    )
    assert reply.status == 413
    assert pulled == 11
    captured.assert_nothing_tracked()


def test_only_post(captured: CapturedEvents) -> None:
    """A GET on the track route is 405 with Allow: POST."""
    reply = post(TrackEndpoint(), {"event": "Search_Performed"}, method="GET")
    assert reply.status == 405
    assert ("allow", "POST") in reply.headers


def test_bursts_get_429_with_retry_after(captured: CapturedEvents) -> None:
    """Past its burst a user gets 429 with Retry-After; other users keep their own bucket."""
    endpoint = TrackEndpoint(rate=0.5, burst=3)
    statuses = [post(endpoint, {"event": "Search_Performed"}).status for _ in range(5)]
    assert statuses == [202, 202, 202, 429, 429]
    limited = post(endpoint, {"event": "Search_Performed"})
    assert dict(limited.headers)["retry-after"] == "2"
    other = Identity(user_id="usr_2", account_id="acc_1")
    assert post(endpoint, {"event": "Search_Performed"}, identity=other).status == 202
    captured.assert_tracked(Events.SEARCH_PERFORMED, user_id="usr_1", times=3)


def test_group_ids_from_the_client_need_the_hook(captured: CapturedEvents) -> None:
    """A client-sent group id is tracked only if authorize_group allows it (else 403)."""
    calls: list[tuple[Identity, Any, str, str]] = []

    def authorize(identity: Identity, request: Any, level: str, group_id: str) -> bool:
        calls.append((identity, request, level, group_id))
        return group_id == "acc_9"

    endpoint = TrackEndpoint(authorize_group=authorize)
    ok = post(endpoint, {"event": "Search_Performed", "group_id": "acc_9"})
    refused = post(endpoint, {"event": "Search_Performed", "group_id": "acc_8"})
    assert (ok.status, refused.status) == (202, 403)
    assert calls[0] == (USER, "the-request", "account", "acc_9")
    captured.assert_tracked(Events.SEARCH_PERFORMED, group_id="acc_9", times=1)


def test_a_raising_or_truthy_hook_refuses(captured: CapturedEvents) -> None:
    """An authorize_group hook that raises or returns a non-True value refuses (403)."""

    def raising(*args: Any) -> bool:
        raise RuntimeError("db down")

    def truthy(*args: Any) -> Any:
        return "yes"

    for hook in (raising, truthy):
        reply = post(
            TrackEndpoint(authorize_group=hook), {"event": "Search_Performed", "group_id": "a"}
        )
        assert reply.status == 403
    captured.assert_nothing_tracked()
    assert any(i.kind == "frontend_hook_error" for i in captured.incidents)


def test_async_hook_is_awaited_by_ahandle_and_refused_by_handle(captured: CapturedEvents) -> None:
    """An async authorize_group is awaited by ahandle() and refuses under handle()."""

    async def authorize(identity: Identity, request: Any, level: str, group_id: str) -> bool:
        await asyncio.sleep(0)
        return True

    endpoint = TrackEndpoint(authorize_group=authorize)
    body = json.dumps({"event": "Search_Performed", "group_id": "acc_7"}).encode()

    async def read(limit: int) -> bytes | None:
        return body

    reply = asyncio.run(endpoint.ahandle(Incoming("POST", JSON), USER, read))
    assert reply.status == 202
    assert post(endpoint, {"event": "Search_Performed", "group_id": "acc_7"}).status == 403
    captured.assert_tracked(Events.SEARCH_PERFORMED, group_id="acc_7", times=1)


def test_origin_hook(captured: CapturedEvents) -> None:
    """allow_origin decides on a present Origin; a request without Origin is accepted."""
    endpoint = TrackEndpoint(allow_origin=lambda origin: origin == "https://app.example")
    body = {"event": "Search_Performed"}
    assert post(endpoint, body, origin="https://app.example").status == 202
    assert post(endpoint, body, origin="https://evil.example").status == 403
    assert post(endpoint, body).status == 202  # no Origin header: not a browser cross-site post
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=2)


def test_the_default_is_the_requests_own_origin_only(captured: CapturedEvents) -> None:
    """Without allow_origin a foreign Origin, ``null`` too, is 403; the own origin is 202."""
    endpoint = TrackEndpoint()
    body = {"event": "Search_Performed"}
    own = "https://app.example"
    for same in (own, "HTTPS://App.Example:443"):  # as browsers compare: no default port
        assert post(endpoint, body, origin=same, own_origin=own).status == 202, same
    for foreign in ("https://evil.example", "http://app.example", "https://app.example:8443"):
        reply = post(endpoint, body, origin=foreign, own_origin=own)
        assert (reply.status, reply.json()["error"]) == (403, "origin_not_allowed"), foreign
        assert not any(name.startswith("access-control-") for name, _ in reply.headers)
    assert post(endpoint, body, origin="null", own_origin=own).status == 403
    assert post(endpoint, body, origin=own).status == 403  # the adapter did not say its own
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=2)


def test_allow_origin_takes_the_origins_and_answers_them_with_cors(
    captured: CapturedEvents,
) -> None:
    """A list of origins allows those (``null`` only if listed); their answers carry CORS."""
    endpoint = TrackEndpoint(allow_origin=["https://front.example", "null"])
    body = {"event": "Search_Performed"}
    for origin in ("https://front.example", "https://FRONT.example:443", "null"):
        reply = post(endpoint, body, origin=origin)
        assert reply.status == 202, origin
        headers = dict(reply.headers)
        assert headers["access-control-allow-origin"] == origin
        assert headers["access-control-allow-credentials"] == "true"
        assert headers["vary"] == "Origin"
    assert post(endpoint, body, origin="https://front.example.evil").status == 403
    preflight = post(endpoint, b"", method="OPTIONS", origin="https://front.example")
    assert preflight.status == 204
    assert ("access-control-allow-methods", "POST") in preflight.headers
    assert not any(name == "content-length" for name, _ in preflight.headers)
    refused = post(endpoint, b"", method="OPTIONS", origin="https://evil.example")
    assert refused.status == 403
    assert not any(name.startswith("access-control-") for name, _ in refused.headers)
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=3)
    with pytest.raises(TypeError, match="list of origins"):
        TrackEndpoint(allow_origin="https://front.example")
    with pytest.raises(ValueError, match="not an origin"):
        TrackEndpoint(allow_origin=["https://front.example/app"])


def test_rejections_are_counted_and_the_context_is_restored(captured: CapturedEvents) -> None:
    """Rejections are counted and no identity stays bound after a request."""
    import instrumentor

    post(TrackEndpoint(), {"event": "Nope_Happened"})
    post(TrackEndpoint(), {"event": "Search_Performed"})
    assert instrumentor.stats()["frontend_rejected"] == 1
    assert instrumentor.current_context().user_id is None


def test_strict_mode_errors_do_not_escape(captured: CapturedEvents) -> None:
    """In strict mode a missing group is an incident and the request is still 202."""
    with capture_events(strict=True) as strict:
        reply = post(TrackEndpoint(), {"event": "Search_Performed"}, identity=Identity(user_id="u"))
        assert reply.status == 202  # fire-and-forget: the missing account is an incident
        assert any(i.kind == "missing_group" for i in strict.incidents)


def test_prefix_and_limits_are_validated() -> None:
    """The prefix must start with '/' and max_body be large enough, else ValueError."""
    assert TrackEndpoint(prefix="/a/").track_path == "/a/track"
    with pytest.raises(ValueError, match="prefix"):
        TrackEndpoint(prefix="a")
    with pytest.raises(ValueError, match="max_body"):
        TrackEndpoint(max_body=1)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=1500),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=10), children, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
        st.dictionaries(
            st.sampled_from(["event", "group_id", "x"]),
            st.one_of(st.text(max_size=30), st.integers(), st.none(), st.lists(st.integers())),
        ).map(lambda value: json.dumps(value).encode()),
    ),
    content_type=st.one_of(st.none(), st.text(max_size=40), st.just(JSON)),
    length=st.one_of(st.none(), st.text(max_size=8), st.just("auto")),
    method=st.sampled_from(["POST", "GET", "post", "PUT", "OPTIONS", ""]),
)
def test_arbitrary_requests_never_get_5xx(
    captured: CapturedEvents, body: bytes, content_type: str | None, length: str | None, method: str
) -> None:
    """Any method, content type, length or body gets a 2xx-4xx JSON answer, or none if gone."""
    endpoint = TrackEndpoint(rate=None)
    reply = post(endpoint, body, content_type=content_type, length=length, method=method)
    if reply.status == CLIENT_CLOSED:  # fewer bytes than Content-Length: the client is gone
        assert reply.body == b""
        return
    assert 200 <= reply.status < 500
    payload = reply.json()
    assert isinstance(payload, dict)
    if reply.status != 202:
        assert payload["accepted"] is False
        assert payload["detail"]


# -- the rate limit, Content-Length, disconnects, incidents, routes --------------------------------


@pytest.mark.parametrize(
    ("refused", "status"),
    [
        ({"content_type": "text/plain"}, 415),
        ({"content_type": "application/x-www-form-urlencoded"}, 415),
        ({"length": "99999"}, 413),
        ({"length": "12abc"}, 400),
        ({"origin": "https://evil.example"}, 403),
        ({"method": "PUT"}, 405),
    ],
    ids=["text", "form", "too-large", "bad-length", "origin", "method"],
)
def test_a_refused_request_takes_no_token_from_the_rate_limit(
    captured: CapturedEvents, refused: dict[str, Any], status: int
) -> None:
    """A cross-site text/plain post needs no preflight: it must not drain the user's bucket."""
    endpoint = TrackEndpoint(rate=0.001, burst=3, allow_origin=lambda o: o == "https://app")
    body = {"event": "Search_Performed"}
    assert [post(endpoint, body, **refused).status for _ in range(10)] == [status] * 10
    assert [post(endpoint, body).status for _ in range(4)] == [202, 202, 202, 429]
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=3)


@pytest.mark.parametrize(
    ("length", "status"),
    [("", 202), ("  ", 202), ("1" * 20, 413), ("9" * 5000, 413), ("²", 400), ("-1", 400)],
    ids=["empty", "blank", "20-digits", "5000-digits", "superscript", "negative"],
)
def test_content_length_edge_cases(captured: CapturedEvents, length: str, status: int) -> None:
    """Empty is absent (Django's META); huge is 413, never an internal error."""
    assert post(TrackEndpoint(), {"event": "Search_Performed"}, length=length).status == status
    assert "internal_error" not in instrumentor.stats()


def test_a_complete_body_shorter_than_its_content_length_is_a_400(
    captured: CapturedEvents,
) -> None:
    """A reader that returns a short body says it is complete: a 400, not a guessed disconnect."""
    reply = post(TrackEndpoint(), b'{"event":', length="500")
    assert (reply.status, reply.json()["error"]) == (400, "bad_request")
    assert "frontend_disconnected" not in instrumentor.stats()


def test_a_reader_that_reports_a_disconnect_gets_no_answer(captured: CapturedEvents) -> None:
    """A reader raising ClientDisconnected gets no answer, a count and no incident."""

    def gone(limit: int) -> bytes | None:
        raise ClientDisconnected("reset by peer")

    async def agone(limit: int) -> bytes | None:
        raise ClientDisconnected("reset by peer")

    incoming = Incoming("POST", JSON, "28")
    assert TrackEndpoint().handle(incoming, USER, gone).status == CLIENT_CLOSED
    assert asyncio.run(TrackEndpoint().ahandle(incoming, USER, agone)).status == CLIENT_CLOSED
    assert instrumentor.stats()["frontend_disconnected"] == 2
    assert captured.incidents == []


def test_rejections_reach_on_error_sampled_per_code(captured: CapturedEvents) -> None:
    """1000 junk requests: all counted, on_error told once per kind of rejection."""
    endpoint = TrackEndpoint()
    for _ in range(1000):
        endpoint.handle(Incoming("OPTIONS"), None, lambda limit: b"")
    for _ in range(10):
        post(endpoint, {"event": "Search_Performed"}, identity=None)
    assert instrumentor.stats()["frontend_rejected"] == 1010
    assert [incident.message[:25] for incident in captured.incidents] == [
        "405 method_not_allowed: u",
        "401 unauthenticated: no s",
    ]


def test_client_input_in_an_incident_is_escaped(captured: CapturedEvents) -> None:
    """A client's event name in an incident is escaped to printable ASCII on one line."""
    name = "Evil\n\x1b[31mEvent\u202e\u0000" + "x" * 200
    assert post(TrackEndpoint(max_body=4096), {"event": name}).status == 422
    (incident,) = captured.incidents
    assert incident.event is not None
    assert incident.event.isascii()
    assert incident.event.isprintable()
    assert incident.event.startswith("Evil\\n\\u001b[31mEvent\\u202e\\u0000xxx")
    assert "\n" not in incident.message
    assert "\x1b" not in incident.message


def test_routes_and_what_is_sent_for_each_method(captured: CapturedEvents) -> None:
    """route() matches exact paths; HEAD, 304 and 405 answers carry the right Content-Length."""
    endpoint = TrackEndpoint(prefix="/events")
    assert endpoint.route("/events/track") == "track"
    assert endpoint.route("/events/instrumentor.js") == "script"
    assert endpoint.route("/events/track/") is None
    assert endpoint.route("/analytics/track") is None
    full = endpoint.script(Incoming("GET"))
    head = endpoint.script(Incoming("HEAD"))
    length = dict(full.headers)["content-length"]
    assert int(length) == len(full.body) > 0
    assert (head.status, head.body, dict(head.headers)["content-length"]) == (200, b"", length)
    etag = dict(full.headers)["etag"]
    cached = endpoint.script(Incoming("GET", if_none_match=etag))
    assert cached.status == 304
    assert "content-length" not in dict(cached.headers)
    refused = post(endpoint, {"event": "Search_Performed"}, method="HEAD")
    assert (refused.status, refused.body) == (405, b"")
    assert int(dict(refused.headers)["content-length"]) > 0
    accepted = post(endpoint, {"event": "Search_Performed"})
    assert dict(accepted.headers)["content-length"] == str(len(accepted.body))


def test_incoming_from_headers() -> None:
    """Incoming.from_headers() reads content type, origin and If-None-Match from a header getter."""
    headers = {"content-type": JSON, "origin": "https://app", "if-none-match": '"x"'}
    incoming = Incoming.from_headers("POST", headers.get, "the-request")
    assert incoming == Incoming("POST", JSON, None, "https://app", "the-request", '"x"')
