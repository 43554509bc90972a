"""AccoilTransport against a mock Accoil: request shapes, status mapping, per-user order."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

import instrumentor
from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor._wiring import Secret
from instrumentor.exceptions import ConfigurationError, PartialDeliveryError
from instrumentor.transports import AccoilTransport
from tests.transports.recording import RecordingHandler

KEY = "acc_live_S3CRET_key_0123456789"
NOW = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
NOW_ISO = "2024-05-01T12:00:00.123Z"
NOW_MS = 1_714_564_800_123

Handler = Callable[[httpx.Request], httpx.Response]
Factory = Callable[..., AccoilTransport]


def identify(user: str = "u1", group: str | None = "acme", **traits: Any) -> IdentifyMessage:
    return IdentifyMessage(user_id=user, group_id=group, traits=traits, timestamp=NOW)


def group(
    group_id: str = "ws1", user: str | None = "u1", parent: str | None = "acme"
) -> GroupMessage:
    traits = {"name": "Workspace", "group_type": "workspace", "parent_group_id": parent}
    return GroupMessage(
        group_id=group_id,
        group_type="workspace",
        parent_group_id=parent,
        user_id=user,
        traits=traits,
        timestamp=NOW,
    )


def track(
    user: str = "u1", event: str = "Report_Created", group_id: str | None = "ws1"
) -> TrackMessage:
    return TrackMessage(
        user_id=user,
        event=event,
        group_id=group_id,
        group_type="workspace",
        category="core_value",
        properties={"size": 3},
        timestamp=NOW,
    )


class Recorder(RecordingHandler):
    """A mock Accoil: records every request; answers 202 unless ``respond`` says otherwise."""

    default_status = 202

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r.content) for r in self.requests]


def body_of(request: httpx.Request) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(request.content)
    return data


@pytest.fixture
def make(built: Callable[..., Any]) -> Factory:
    """Builds transports speaking to a handler (closed after the test)."""

    def factory(handler: Handler, **kwargs: Any) -> AccoilTransport:
        kwargs.setdefault("api_key", KEY)
        transport: AccoilTransport = built(AccoilTransport, handler, **kwargs)
        return transport

    return factory


def partial(transport: AccoilTransport, batch: list[Message]) -> PartialDeliveryError:
    with pytest.raises(PartialDeliveryError) as info:
        transport.deliver(batch)
    return info.value


class TestV2Requests:
    def test_identify(self, make: Factory) -> None:
        """Identify posts userId, groupId, traits and an ISO timestamp to /v2/identify, no more."""
        recorder = Recorder()
        message = identify(email="a@example.com")
        make(recorder).deliver([message])
        (request,) = recorder.requests
        assert request.method == "POST"
        assert str(request.url) == "https://in.accoil.com/v2/identify"
        assert body_of(request) == {
            "userId": "u1",
            "groupId": "acme",
            "traits": {"email": "a@example.com"},
            "timestamp": NOW_ISO,
        }
        assert request.headers["idempotency-key"] == message.message_id  # not in the body

    def test_headers(self, make: Factory) -> None:
        """The raw key goes in Authorization: Basic, with JSON content type and user agent."""
        recorder = Recorder()
        make(recorder).deliver([identify()])
        headers = recorder.requests[0].headers
        assert headers["authorization"] == f"Basic {KEY}"
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == f"instrumentor/{instrumentor.__version__}"

    def test_secret_key(self, make: Factory) -> None:
        """A Secret is accepted as the key and sent revealed."""
        recorder = Recorder()
        make(recorder, api_key=Secret(KEY)).deliver([identify()])
        assert recorder.requests[0].headers["authorization"] == f"Basic {KEY}"

    def test_group(self, make: Factory) -> None:
        """Group posts groupId, userId and traits with name, group_type, parent_group_id."""
        recorder = Recorder()
        message = group()
        make(recorder).deliver([message])
        (request,) = recorder.requests
        assert str(request.url) == "https://in.accoil.com/v2/group"
        assert body_of(request) == {
            "groupId": "ws1",
            "userId": "u1",
            "traits": {"name": "Workspace", "group_type": "workspace", "parent_group_id": "acme"},
            "timestamp": NOW_ISO,
        }

    def test_track(self, make: Factory) -> None:
        """Track posts userId, the event name and the time: no properties, context, messageId."""
        recorder = Recorder()
        message = track()
        make(recorder).deliver([message])
        (request,) = recorder.requests
        assert str(request.url) == "https://in.accoil.com/v2/track"
        assert body_of(request) == {
            "userId": "u1",
            "event": "Report_Created",
            "timestamp": NOW_ISO,
        }

    def test_unset_fields_are_omitted(self, make: Factory) -> None:
        """A missing group, user or empty traits are left out, never sent as null."""
        recorder = Recorder()
        batch: list[Message] = [identify(group=None), group(user=None), track(group_id=None)]
        make(recorder).deliver(batch)
        bodies = {str(r.url.path): body_of(r) for r in recorder.requests}
        assert set(bodies["/v2/identify"]) == {"userId", "timestamp"}
        assert "userId" not in bodies["/v2/group"]
        assert set(bodies["/v2/track"]) == {"userId", "event", "timestamp"}

    def test_endpoint_trailing_slash(self, make: Factory) -> None:
        """A trailing slash on the endpoint is tolerated, a path prefix kept."""
        recorder = Recorder()
        make(recorder, endpoint="https://proxy.example/accoil/").deliver([track()])
        assert str(recorder.requests[0].url) == "https://proxy.example/accoil/v2/track"


class TestV1Requests:
    def test_users(self, make: Factory) -> None:
        """Identify posts snake_case with the key in the body and Unix milliseconds."""
        recorder = Recorder()
        make(recorder, api_version="v1").deliver([identify(plan="pro")])
        (request,) = recorder.requests
        assert str(request.url) == "https://in.accoil.com/v1/users"
        assert "authorization" not in request.headers
        assert request.headers["content-type"] == "application/json"
        assert body_of(request) == {
            "api_key": KEY,
            "user_id": "u1",
            "group_id": "acme",
            "traits": {"plan": "pro"},
            "timestamp": NOW_MS,
        }

    def test_groups(self, make: Factory) -> None:
        """Group posts group_id, the user it links and traits to /v1/groups."""
        recorder = Recorder()
        make(recorder, api_version="v1").deliver([group()])
        (request,) = recorder.requests
        assert str(request.url) == "https://in.accoil.com/v1/groups"
        assert body_of(request) == {
            "api_key": KEY,
            "group_id": "ws1",
            "user_id": "u1",
            "traits": {"name": "Workspace", "group_type": "workspace", "parent_group_id": "acme"},
            "timestamp": NOW_MS,
        }

    def test_events(self, make: Factory) -> None:
        """Track posts user_id and event to /v1/events: no context."""
        recorder = Recorder()
        make(recorder, api_version="v1").deliver([track()])
        (request,) = recorder.requests
        assert str(request.url) == "https://in.accoil.com/v1/events"
        assert body_of(request) == {
            "api_key": KEY,
            "user_id": "u1",
            "event": "Report_Created",
            "timestamp": NOW_MS,
        }

    def test_unset_fields_are_omitted(self, make: Factory) -> None:
        """Without a group or traits, those keys are left out."""
        recorder = Recorder()
        make(recorder, api_version="v1").deliver([identify(group=None), track(group_id=None)])
        assert [set(b) for b in recorder.bodies()] == [
            {"api_key", "user_id", "timestamp"},
            {"api_key", "user_id", "event", "timestamp"},
        ]


class TestStatusMapping:
    @pytest.mark.parametrize("status", [200, 202, 204])
    def test_success(self, make: Factory, status: int) -> None:
        """A 2xx answer means delivered: deliver returns."""
        make(Recorder(lambda r: httpx.Response(status))).deliver([track(), identify()])

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_retryable(self, make: Factory, status: int) -> None:
        """408, 429 and 5xx but 501/505 put the message in retry."""
        message = track()
        exc = partial(make(Recorder(lambda r: httpx.Response(status))), [message])
        assert exc.retry == (message,)
        assert exc.failed == ()
        assert exc.retry_after is None
        assert f"answered {status}" in str(exc)

    def test_retry_after_seconds(self, make: Factory) -> None:
        """Retry-After in seconds is passed on."""
        respond = Recorder(lambda r: httpx.Response(429, headers={"Retry-After": "7"}))
        assert partial(make(respond), [track()]).retry_after == 7.0

    def test_retry_after_http_date(self, make: Factory) -> None:
        """Retry-After as an HTTP date is passed on as seconds from now."""
        when = email.utils.formatdate(time.time() + 60, usegmt=True)
        respond = Recorder(lambda r: httpx.Response(503, headers={"Retry-After": when}))
        retry_after = partial(make(respond), [track()]).retry_after
        assert retry_after is not None
        assert 50 <= retry_after <= 60

    def test_retry_after_is_the_longest(self, make: Factory) -> None:
        """With several retryable failures the longest Retry-After wins."""

        def respond(request: httpx.Request) -> httpx.Response:
            wait = "3" if body_of(request)["userId"] == "u1" else "9"
            return httpx.Response(503, headers={"Retry-After": wait})

        exc = partial(make(Recorder(respond)), [track("u1"), track("u2"), track("u3")])
        assert exc.retry_after == 9.0
        assert len(exc.retry) == 3

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 501, 505])
    def test_permanent(self, make: Factory, status: int) -> None:
        """Other 4xx and 501/505 put the message in failed, with the request and status."""
        message = track()
        exc = partial(make(Recorder(lambda r: httpx.Response(status))), [message])
        assert exc.failed == ((message, f"POST /v2/track answered {status}"),)
        assert exc.retry == ()

    def test_413_is_permanent_for_one_message(self, make: Factory) -> None:
        """413 for a single message cannot be split: it fails as too large."""
        message = identify()
        exc = partial(make(Recorder(lambda r: httpx.Response(413))), [message])
        assert exc.retry == ()
        ((failed, reason),) = exc.failed
        assert failed is message
        assert "413" in reason
        assert "too large" in reason

    @pytest.mark.parametrize(
        "error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")], ids=type
    )
    def test_transport_errors_are_retryable(self, make: Factory, error: Exception) -> None:
        """A connection error or timeout puts the message in retry."""

        def respond(request: httpx.Request) -> httpx.Response:
            raise error

        message = track()
        exc = partial(make(Recorder(respond)), [message])
        assert exc.retry == (message,)
        assert type(error).__name__ in str(exc)


class Concurrency:
    """A handler that answers 202 after a pause, recording the most requests in flight."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0

    def respond(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.pause)
        with self.lock:
            self.in_flight -= 1
        return httpx.Response(202)


class TestOrderAndConcurrency:
    def test_each_users_order_is_kept_while_users_run_concurrently(self, make: Factory) -> None:
        """Users are sent concurrently (up to max_in_flight), each user's messages in order."""
        concurrency = Concurrency(0.02)
        respond = concurrency.respond
        users = [f"u{i}" for i in range(6)]
        batch: list[Message] = []
        for step in range(3):  # interleaved: u0 m0, u1 m0, ..., u0 m1, ...
            batch += [track(user, event=f"Step_{step}_Done") for user in users]
        recorder = Recorder(respond)
        make(recorder, max_in_flight=4).deliver(batch)
        assert 1 < concurrency.most <= 4
        sent = [(b["userId"], b["event"]) for b in recorder.bodies()]
        assert sorted(sent) == sorted(
            (m.user_id, m.event) for m in batch if isinstance(m, TrackMessage)
        )
        for user in users:
            events = [event for who, event in sent if who == user]
            assert events == ["Step_0_Done", "Step_1_Done", "Step_2_Done"]

    def test_one_in_flight_sends_one_at_a_time(self, make: Factory) -> None:
        """With max_in_flight=1 requests never overlap, and each user's order is kept."""
        concurrency = Concurrency(0.005)
        respond = concurrency.respond
        recorder = Recorder(respond)
        batch: list[Message] = [track("a"), track("b"), identify("a"), identify("c")]
        make(recorder, max_in_flight=1).deliver(batch)
        assert concurrency.most == 1
        sent = [(r.url.path, body_of(r)["userId"]) for r in recorder.requests]
        assert sorted(sent) == sorted(
            [("/v2/track", "a"), ("/v2/track", "b"), ("/v2/identify", "a"), ("/v2/identify", "c")]
        )
        assert [path for path, user in sent if user == "a"] == ["/v2/track", "/v2/identify"]

    def test_failing_users_rest_is_retried_and_others_delivered(self, make: Factory) -> None:
        """After a retryable failure a user's later messages are not sent but retried."""
        batch: list[Message] = []
        for step in range(3):
            batch += [track(user, event=f"Step_{step}_Done") for user in ("u1", "u2", "u3")]

        def respond(request: httpx.Request) -> httpx.Response:
            body = body_of(request)
            failing = body["userId"] == "u2" and body["event"] == "Step_1_Done"
            return httpx.Response(503 if failing else 202)

        recorder = Recorder(respond)
        exc = partial(make(recorder, max_in_flight=3), batch)
        u2_later = [m for m in batch if isinstance(m, TrackMessage) and m.user_id == "u2"][1:]
        assert exc.retry == tuple(u2_later)
        assert exc.failed == ()
        sent = [(b["userId"], b["event"]) for b in recorder.bodies()]
        assert ("u2", "Step_2_Done") not in sent
        assert sorted(u for u, _ in sent) == ["u1"] * 3 + ["u2"] * 2 + ["u3"] * 3

    def test_retry_keeps_batch_order_across_users(self, make: Factory) -> None:
        """Messages to retry come back in their original batch order."""
        batch: list[Message] = [track("a"), track("b"), identify("a"), identify("b")]
        exc = partial(make(Recorder(lambda r: httpx.Response(500))), batch)
        assert exc.retry == tuple(batch)

    def test_permanent_refusal_does_not_block_the_user(self, make: Factory) -> None:
        """A permanently refused message fails alone; the user's next messages are sent."""
        first, second, third = identify("u1"), group("ws1", "u1"), track("u1")

        def respond(request: httpx.Request) -> httpx.Response:
            return httpx.Response(400 if request.url.path == "/v2/identify" else 202)

        recorder = Recorder(respond)
        exc = partial(make(recorder), [first, second, third])
        assert exc.failed == ((first, "POST /v2/identify answered 400"),)
        assert exc.retry == ()
        assert [str(r.url.path) for r in recorder.requests] == [
            "/v2/identify",
            "/v2/group",
            "/v2/track",
        ]

    def test_group_without_user_is_its_own_sequence(self, make: Factory) -> None:
        """A group without a user is not held back by a failing user."""
        batch: list[Message] = [track("u1"), group("acme", user=None, parent=None)]

        def respond(request: httpx.Request) -> httpx.Response:
            return httpx.Response(503 if request.url.path == "/v2/track" else 202)

        exc = partial(make(Recorder(respond)), batch)
        assert exc.retry == (batch[0],)

    def test_empty_batch_sends_nothing(self, make: Factory) -> None:
        """An empty batch is delivered without a request."""
        recorder = Recorder()
        make(recorder).deliver([])
        assert recorder.requests == []


class TestSecrets:
    def test_repr_shows_endpoint_and_version_only(self, make: Factory) -> None:
        """repr and str name the endpoint and version, never the key."""
        transport = make(Recorder(), endpoint="https://in.accoil.com/")
        assert (
            repr(transport) == "AccoilTransport(endpoint='https://in.accoil.com', api_version='v2')"
        )
        assert KEY not in str(transport)

    @pytest.mark.parametrize("api_version", ["v2", "v1"])
    @pytest.mark.parametrize("status", [400, 401, 413, 429, 503])
    def test_key_not_in_errors(self, make: Factory, api_version: str, status: int) -> None:
        """No delivery error, nor its reasons, contains the key."""
        respond = Recorder(lambda r: httpx.Response(status, text=r.content.decode()))
        exc = partial(make(respond, api_version=api_version), [track(), identify("u2")])
        texts = [str(exc), repr(exc), *(reason for _, reason in exc.failed)]
        assert all(KEY not in text for text in texts)

    def test_key_not_in_connection_errors(self, make: Factory) -> None:
        """A transport error's message does not contain the key."""

        def respond(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        exc = partial(make(Recorder(respond)), [track()])
        assert KEY not in str(exc)
        assert KEY not in repr(exc)

    @pytest.mark.parametrize("key", ["", "with space", "new\nline", "tab\there", "kéy"])
    def test_unusable_key_is_refused_without_echo(self, key: str) -> None:
        """An empty or unsendable key raises ConfigurationError that does not echo it."""
        with pytest.raises(ConfigurationError) as info:
            AccoilTransport(key)
        if key:
            assert key not in str(info.value)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"api_version": "v3"},
            {"max_in_flight": 0},
            {"timeout": 0},
            {"endpoint": "in.accoil.com"},
        ],
    )
    def test_invalid_settings(self, kwargs: dict[str, Any]) -> None:
        """A bad version, concurrency, timeout or endpoint raises ConfigurationError."""
        with pytest.raises(ConfigurationError):
            AccoilTransport(KEY, **kwargs)


class TestLifecycle:
    # Connections kept alive, renewed after close() and after a fork, and the sender threads:
    # test_accoil_senders.py, on real sockets.

    def test_sequences_run_inline_when_no_thread_can_start(
        self, make: Factory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At interpreter shutdown (no new threads) every user's messages still go out."""
        recorder = Recorder()
        transport = make(recorder)

        def refuse(self: threading.Thread) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

        monkeypatch.setattr(threading.Thread, "start", refuse)
        transport.deliver([track("u1"), track("u2"), track("u3")])
        assert len(recorder.requests) == 3

    def test_an_unencodable_string_fails_only_its_message(self, make: Factory) -> None:
        """A lone surrogate is sent as '?' and never costs the rest of the batch."""
        recorder = Recorder()
        make(recorder).deliver([track("u1"), track("bad\ud800"), track("u3")])
        assert len(recorder.requests) == 3
