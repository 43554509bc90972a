"""SegmentTransport against a mock batch endpoint: shapes, gzip, limits, chunks, statuses."""

from __future__ import annotations

import base64
import email.utils
import gzip
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

import instrumentor
from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor._wiring import Secret
from instrumentor.exceptions import (
    ConfigurationError,
    DeliveryError,
    PartialDeliveryError,
    RetryableDeliveryError,
)
from instrumentor.transports import SegmentTransport
from instrumentor.transports._segment import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from tests.transports.recording import RecordingHandler

KEY = "seg_write_S3CRET_key_0123456789"
TOKEN = base64.b64encode(f"{KEY}:".encode()).decode()
NOW = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
NOW_ISO = "2024-05-01T12:00:00.123Z"
LIBRARY = {"name": "instrumentor", "version": instrumentor.__version__}
BLOB = 20_000  # bytes of padding: about 24 such messages fit in one request

Handler = Callable[[httpx.Request], httpx.Response]
Factory = Callable[..., SegmentTransport]


def identify(user: str = "u1", group: str | None = "acme") -> IdentifyMessage:
    return IdentifyMessage(user_id=user, group_id=group, traits={"plan": "pro"}, timestamp=NOW)


def group(user: str | None = "u1") -> GroupMessage:
    traits = {"name": "Workspace", "group_type": "workspace", "parent_group_id": "acme"}
    return GroupMessage(
        group_id="ws1",
        group_type="workspace",
        parent_group_id="acme",
        user_id=user,
        traits=traits,
        timestamp=NOW,
    )


def track(
    user: str = "u1", *, blob: int = 0, group_id: str | None = "ws1", **context: Any
) -> TrackMessage:
    return TrackMessage(
        user_id=user,
        event="Report_Created",
        group_id=group_id,
        group_type="workspace",
        category="core_value",
        properties={"size": 3, "blob": "x" * blob},
        timestamp=NOW,
        context=context,
    )


def big_batch(count: int) -> list[Message]:
    return [track(f"u{i}", blob=BLOB) for i in range(count)]


class Recorder(RecordingHandler):
    """A mock batch endpoint: records every request; answers 200 unless told otherwise."""

    default_status = 200

    def ids(self) -> list[list[str]]:
        """The message ids of each request, in order."""
        return [[m["messageId"] for m in body_of(r)["batch"]] for r in self.requests]


def body_of(request: httpx.Request) -> dict[str, Any]:
    content = request.content
    if request.headers.get("content-encoding") == "gzip":
        content = gzip.decompress(content)
    data: dict[str, Any] = json.loads(content)
    return data


def answer_nth(n: int, response: httpx.Response) -> Handler:
    """A handler answering ``response`` to the n-th request (from 1) and 200 otherwise."""
    count = 0

    def respond(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return response if count == n else httpx.Response(200)

    return respond


@pytest.fixture
def make(built: Callable[..., Any]) -> Factory:
    """Builds transports speaking to a handler (closed after the test)."""

    def factory(handler: Handler, **kwargs: Any) -> SegmentTransport:
        kwargs.setdefault("write_key", KEY)
        transport: SegmentTransport = built(SegmentTransport, handler, **kwargs)
        return transport

    return factory


def ids(messages: Any) -> list[str]:
    return [m.message_id for m in messages]


class TestRequestShape:
    def test_batch_request(self, make: Factory) -> None:
        """One POST to /v1/batch with Basic base64(key:), JSON, user agent and sentAt."""
        recorder = Recorder()
        make(recorder).deliver([identify()])
        (request,) = recorder.requests
        assert request.method == "POST"
        assert str(request.url) == "https://api.segment.io/v1/batch"
        assert request.headers["authorization"] == f"Basic {TOKEN}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == f"instrumentor/{instrumentor.__version__}"
        assert "content-encoding" not in request.headers
        body = body_of(request)
        assert set(body) == {"batch", "sentAt"}
        sent_at = datetime.fromisoformat(body["sentAt"].replace("Z", "+00:00"))
        assert abs(datetime.now(timezone.utc) - sent_at) < timedelta(seconds=10)

    def test_secret_key(self, make: Factory) -> None:
        """A Secret is accepted as the write key."""
        recorder = Recorder()
        make(recorder, write_key=Secret(KEY)).deliver([identify()])
        assert recorder.requests[0].headers["authorization"] == f"Basic {TOKEN}"

    def test_messages_in_spec_form(self, make: Factory) -> None:
        """Identify, group and track go in the spec form, in order, without context.groupId."""
        recorder = Recorder()
        first, second, third = identify(), group(), track(traceId="abc")
        make(recorder).deliver([first, second, third])
        assert body_of(recorder.requests[0])["batch"] == [
            {
                "type": "identify",
                "messageId": first.message_id,
                "userId": "u1",
                "traits": {"plan": "pro"},
                "timestamp": NOW_ISO,
                "context": {"library": LIBRARY},
            },
            {
                "type": "group",
                "messageId": second.message_id,
                "groupId": "ws1",
                "userId": "u1",
                "traits": {
                    "name": "Workspace",
                    "group_type": "workspace",
                    "parent_group_id": "acme",
                },
                "timestamp": NOW_ISO,
                "context": {"library": LIBRARY},
            },
            {
                "type": "track",
                "messageId": third.message_id,
                "userId": "u1",
                "event": "Report_Created",
                "properties": {"size": 3, "blob": ""},
                "timestamp": NOW_ISO,
                "context": {"traceId": "abc", "library": LIBRARY},
            },
        ]

    def test_context_attribution_sends_group_id_in_context(self, make: Factory) -> None:
        """group_attribution="context" puts the group in context.groupId of identify and track."""
        recorder = Recorder()
        make(recorder, group_attribution="context").deliver([identify(), group(), track()])
        batch = body_of(recorder.requests[0])["batch"]
        assert [call["context"] for call in batch] == [
            {"groupId": "acme", "library": LIBRARY},
            {"library": LIBRARY},
            {"groupId": "ws1", "library": LIBRARY},
        ]

    def test_unset_fields_are_omitted(self, make: Factory) -> None:
        """A missing user or group is left out, never sent as null."""
        recorder = Recorder()
        transport = make(recorder, group_attribution="context")
        transport.deliver([identify(group=None), group(user=None), track(group_id=None)])
        batch = body_of(recorder.requests[0])["batch"]
        assert batch[0]["context"] == {"library": LIBRARY}
        assert "userId" not in batch[1]
        assert batch[2]["context"] == {"library": LIBRARY}

    def test_group_without_user_has_a_stable_anonymous_id(self, make: Factory) -> None:
        """A group call without a user carries an anonymousId (the API needs one), per group."""
        recorder = Recorder()
        transport = make(recorder)
        transport.deliver([group(user=None), group(user=None), group()])
        first, again, with_user = body_of(recorder.requests[0])["batch"]
        assert first["anonymousId"] == str(uuid.UUID(first["anonymousId"]))
        assert again["anonymousId"] == first["anonymousId"]
        assert "anonymousId" not in with_user
        other = GroupMessage("ws2", "workspace", "acme", None, {}, NOW)
        transport.deliver([other])
        assert body_of(recorder.requests[1])["batch"][0]["anonymousId"] != first["anonymousId"]

    def test_gzip(self, make: Factory) -> None:
        """gzip=True sends a gzip-compressed body with Content-Encoding: gzip."""
        recorder = Recorder()
        message = track()
        make(recorder, gzip=True).deliver([message])
        (request,) = recorder.requests
        assert request.headers["content-encoding"] == "gzip"
        body = json.loads(gzip.decompress(request.content))
        assert [m["messageId"] for m in body["batch"]] == [message.message_id]

    def test_custom_endpoint_with_trailing_slash(self, make: Factory) -> None:
        """Another Segment-compatible endpoint is used as given, a trailing slash ignored."""
        recorder = Recorder()
        make(recorder, endpoint="https://hosted.rudderlabs.example/").deliver([track()])
        assert str(recorder.requests[0].url) == "https://hosted.rudderlabs.example/v1/batch"

    def test_empty_batch_sends_nothing(self, make: Factory) -> None:
        """An empty batch is delivered without a request."""
        recorder = Recorder()
        make(recorder).deliver([])
        assert recorder.requests == []


class TestStatusMapping:
    @pytest.mark.parametrize("status", [200, 202])
    def test_success(self, make: Factory, status: int) -> None:
        """A 2xx answer means the batch was delivered."""
        make(Recorder(lambda r: httpx.Response(status))).deliver([track(), identify()])

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_retryable(self, make: Factory, status: int) -> None:
        """408, 429 and 5xx but 501/505 raise RetryableDeliveryError for the whole batch."""
        with pytest.raises(RetryableDeliveryError) as info:
            make(Recorder(lambda r: httpx.Response(status))).deliver([track(), identify()])
        assert info.value.status == status
        assert str(info.value) == f"POST /v1/batch answered {status}"

    def test_retry_after_seconds(self, make: Factory) -> None:
        """Retry-After in seconds is passed on."""
        respond = Recorder(lambda r: httpx.Response(429, headers={"Retry-After": "12"}))
        with pytest.raises(RetryableDeliveryError) as info:
            make(respond).deliver([track()])
        assert info.value.retry_after == 12.0

    def test_retry_after_http_date(self, make: Factory) -> None:
        """Retry-After as an HTTP date is passed on as seconds from now."""
        when = email.utils.formatdate(time.time() + 60, usegmt=True)
        respond = Recorder(lambda r: httpx.Response(503, headers={"Retry-After": when}))
        with pytest.raises(RetryableDeliveryError) as info:
            make(respond).deliver([track()])
        assert info.value.retry_after is not None
        assert 50 <= info.value.retry_after <= 60

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 501, 505])
    def test_permanent(self, make: Factory, status: int) -> None:
        """Other 4xx and 501/505 fail every message of the request, with the status."""
        batch: list[Message] = [track(), identify()]
        with pytest.raises(PartialDeliveryError) as info:
            make(Recorder(lambda r: httpx.Response(status))).deliver(batch)
        reason = f"POST /v1/batch answered {status}"
        assert info.value.failed == ((batch[0], reason), (batch[1], reason))
        assert info.value.retry == ()

    def test_413_for_several_messages_splits_the_request(self, make: Factory) -> None:
        """413 for a request of several messages splits it until each part fits."""

        def small_only(request: httpx.Request) -> httpx.Response:
            return httpx.Response(413 if len(request.content) > 700 else 200)

        recorder = Recorder(small_only)
        batch: list[Message] = [track(), identify(), track(), track()]
        make(recorder).deliver(batch)
        accepted = [
            i
            for r, ids_ in zip(recorder.requests, recorder.ids(), strict=True)
            if len(r.content) <= 700
            for i in ids_
        ]
        assert accepted == ids(batch)

    def test_413_for_one_message_fails_it(self, make: Factory) -> None:
        """413 for a request of one message fails that message as too large."""
        message = track()
        with pytest.raises(PartialDeliveryError) as info:
            make(Recorder(lambda r: httpx.Response(413))).deliver([message])
        ((failed, reason),) = info.value.failed
        assert failed is message
        assert "413" in reason
        assert "too large" in reason

    @pytest.mark.parametrize(
        "error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")], ids=type
    )
    def test_transport_errors_are_retryable(self, make: Factory, error: Exception) -> None:
        """A connection error or timeout raises RetryableDeliveryError."""

        def respond(request: httpx.Request) -> httpx.Response:
            raise error

        with pytest.raises(RetryableDeliveryError) as info:
            make(Recorder(respond)).deliver([track()])
        assert type(error).__name__ in str(info.value)


class TestLimits:
    def test_oversize_message_fails_unsent(self, make: Factory) -> None:
        """A message over 32 KB fails without being sent; the others are delivered."""
        recorder = Recorder()
        small, huge, other = track("a"), track("b", blob=40_000), identify("c")
        with pytest.raises(PartialDeliveryError) as info:
            make(recorder).deliver([small, huge, other])
        assert info.value.failed == ((huge, "message over 32 KB (too large)"),)
        assert info.value.retry == ()
        assert recorder.ids() == [ids([small, other])]

    def test_only_oversize_sends_nothing(self, make: Factory) -> None:
        """A batch of one oversize message makes no request."""
        recorder = Recorder()
        huge = track(blob=40_000)
        with pytest.raises(PartialDeliveryError) as info:
            make(recorder).deliver([huge])
        assert info.value.failed == ((huge, "message over 32 KB (too large)"),)
        assert recorder.requests == []

    def test_message_size_boundary(self, make: Factory) -> None:
        """A message of exactly 32 KB is sent; one byte more is refused."""
        recorder = Recorder()
        transport = make(recorder)
        transport.deliver([track()])
        (entry,) = body_of(recorder.requests[0])["batch"]
        base = len(json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode())
        fits, over = track(blob=MAX_MESSAGE_BYTES - base), track(blob=MAX_MESSAGE_BYTES - base + 1)
        with pytest.raises(PartialDeliveryError) as info:
            transport.deliver([fits, over])
        assert info.value.failed == ((over, "message over 32 KB (too large)"),)
        assert recorder.ids()[-1] == [fits.message_id]

    def test_chunks_stay_under_the_request_limit_in_order(self, make: Factory) -> None:
        """A large batch goes in as few requests as fit 500 KB each, order kept."""
        recorder = Recorder()
        batch = big_batch(60)
        make(recorder).deliver(batch)
        assert len(recorder.requests) == 3  # ~1.2 MB: three requests, none wasted
        assert all(len(r.content) <= MAX_REQUEST_BYTES for r in recorder.requests)
        assert [i for chunk in recorder.ids() for i in chunk] == ids(batch)

    def test_gzip_chunks_by_uncompressed_size(self, make: Factory) -> None:
        """With gzip the limit applies to the JSON before compression."""
        recorder = Recorder()
        batch = big_batch(30)
        make(recorder, gzip=True).deliver(batch)
        assert len(recorder.requests) == 2
        assert all(len(gzip.decompress(r.content)) <= MAX_REQUEST_BYTES for r in recorder.requests)

    @pytest.mark.parametrize("status", [503])
    def test_later_chunk_retryable_or_too_large(self, make: Factory, status: int) -> None:
        """When a later request fails for a retryable reason, it and the rest are retried."""
        response = httpx.Response(status, headers={"Retry-After": "4"})
        recorder = Recorder(answer_nth(2, response))
        batch = big_batch(60)
        with pytest.raises(PartialDeliveryError) as info:
            make(recorder).deliver(batch)
        first_chunk = recorder.ids()[0]
        assert ids(info.value.retry) == ids(batch)[len(first_chunk) :]
        assert info.value.failed == ()
        assert info.value.retry_after == (4.0 if status == 503 else None)
        assert len(recorder.requests) == 2  # nothing after the failed request

    def test_later_chunk_413_is_split_not_retried(self, make: Factory) -> None:
        """A 413 on a later request splits that request; everything is delivered in order."""
        recorder = Recorder(answer_nth(2, httpx.Response(413)))
        batch = big_batch(60)
        make(recorder).deliver(batch)
        accepted = [
            message_id
            for request, request_ids in zip(recorder.requests, recorder.ids(), strict=True)
            if request is not recorder.requests[1]
            for message_id in request_ids
        ]
        assert accepted == ids(batch)
        assert len(recorder.requests) == 5  # 1, the refused 2nd, its two halves, 3

    def test_later_chunk_refused(self, make: Factory) -> None:
        """When a later request is refused for good, its messages fail and the rest still go."""
        recorder = Recorder(answer_nth(2, httpx.Response(400)))
        batch = big_batch(60)
        with pytest.raises(PartialDeliveryError) as info:
            make(recorder).deliver(batch)
        first, second, third = recorder.ids()
        assert ids(m for m, _ in info.value.failed) == second
        assert {reason for _, reason in info.value.failed} == {"POST /v1/batch answered 400"}
        assert info.value.retry == ()
        assert first + second + third == ids(batch)

    def test_first_chunk_retryable_after_oversize(self, make: Factory) -> None:
        """A retryable failure after an oversize refusal retries the rest, fails the big one."""
        recorder = Recorder(lambda r: httpx.Response(500))
        small, huge = track("a"), track("b", blob=40_000)
        with pytest.raises(PartialDeliveryError) as info:
            make(recorder).deliver([huge, small])
        assert info.value.failed == ((huge, "message over 32 KB (too large)"),)
        assert info.value.retry == (small,)


class TestSecretsAndLifecycle:
    def test_repr_has_no_key(self, make: Factory) -> None:
        """repr and str name the endpoint, never the key."""
        transport = make(Recorder())
        assert repr(transport) == (
            "SegmentTransport(endpoint='https://api.segment.io', gzip=False, "
            "group_attribution='none')"
        )
        assert KEY not in str(transport)
        assert TOKEN not in str(transport)

    @pytest.mark.parametrize("status", [400, 401, 413, 429, 503])
    def test_key_not_in_errors(self, make: Factory, status: int) -> None:
        """No delivery error, nor its reasons, contains the key or its encoding."""
        recorder = Recorder(lambda r: httpx.Response(status, text=r.headers["authorization"]))
        with pytest.raises(DeliveryError) as info:
            make(recorder).deliver([track(), identify(), track(blob=40_000)])
        exc = info.value
        texts = [str(exc), repr(exc)]
        if isinstance(exc, PartialDeliveryError):
            texts += [reason for _, reason in exc.failed]
        assert all(KEY not in text and TOKEN not in text for text in texts)

    @pytest.mark.parametrize("key", ["", "   "])
    def test_empty_key_is_refused(self, key: str) -> None:
        """An empty write key raises ConfigurationError."""
        with pytest.raises(ConfigurationError):
            SegmentTransport(key)

    @pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"endpoint": "api.segment.io"}])
    def test_invalid_settings(self, kwargs: dict[str, Any]) -> None:
        """A bad timeout or endpoint raises ConfigurationError."""
        with pytest.raises(ConfigurationError):
            SegmentTransport(KEY, **kwargs)

    def test_unknown_group_attribution_names_the_allowed_values(self) -> None:
        """An unknown group_attribution raises ConfigurationError listing the allowed ones."""
        with pytest.raises(ConfigurationError) as info:
            SegmentTransport(KEY, group_attribution="segment")  # type: ignore[arg-type]
        for allowed in ("'none'", "'context'", "'posthog'", "'mixpanel'", "'amplitude'"):
            assert allowed in str(info.value)
        assert "'segment'" in str(info.value)

    def test_close_then_reuse_opens_a_new_client(self, make: Factory) -> None:
        """After close() the client is closed; the next delivery opens a new one."""
        recorder = Recorder()
        transport = make(recorder)
        transport.deliver([track()])
        client = transport._holder.get()
        transport.close()
        assert client.is_closed
        transport.deliver([track()])
        assert transport._holder.get() is not client
        assert len(recorder.requests) == 2
