"""The fault-injecting provider stand-in (tests/fault_server.py), against real httpx clients."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fault_server import FaultServer


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault_server:
        yield fault_server
    assert fault_server.errors() == []


def _event(message_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Report Created", "messageId": message_id, **extra}


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fault-server")]


def test_accepts_both_body_shapes(server: FaultServer) -> None:
    """A single object and a batch are accepted; message_ids() lists every id in order."""
    with httpx.Client(base_url=server.url, timeout=2) as client:
        single = client.post("/v1/track", json=_event("m1"))
        batch = client.post("/v1/batch", json={"batch": [_event("m2"), _event("m3")]})
    assert (single.status_code, batch.status_code) == (200, 200)
    assert single.json() == {"success": True}
    assert server.message_ids() == ["m1", "m2", "m3"]
    received = server.received()
    assert [(r.method, r.path) for r in received] == [("POST", "/v1/track"), ("POST", "/v1/batch")]
    assert received[0].json == _event("m1")
    assert received[1].headers["content-type"] == "application/json"
    assert all(r.accepted and r.finished and r.fault is None for r in received)


def test_gzip_body_is_decompressed(server: FaultServer) -> None:
    """A Content-Encoding: gzip body is decompressed before its ids are read."""
    raw = json.dumps({"batch": [_event("g1"), _event("g2")]}).encode()
    compressed = gzip.compress(raw)
    response = httpx.post(
        server.url + "/v1/batch",
        content=compressed,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=2,
    )
    assert response.status_code == 200
    assert server.message_ids() == ["g1", "g2"]
    (request,) = server.received()
    assert (request.body, request.wire_size) == (raw, len(compressed))
    assert request.headers["content-encoding"] == "gzip"


def test_chunked_body_is_read(server: FaultServer) -> None:
    """A chunked body (no Content-Length) is read whole."""
    parts = [b'{"batch": [{"messageId": ', b'"c1"}, {"messageId": "c2"}]}']
    response = httpx.post(server.url, content=iter(parts), timeout=2)
    assert response.status_code == 200
    assert server.message_ids() == ["c1", "c2"]
    assert server.received()[0].headers["transfer-encoding"] == "chunked"


def test_unreadable_bodies_are_rejected(server: FaultServer) -> None:
    """Non-JSON and corrupt gzip bodies get 400, an unknown encoding 415; none counts."""
    with httpx.Client(base_url=server.url, timeout=2) as client:
        not_json = client.post("/", content=b"{not json")
        bad_gzip = client.post("/", content=b"nope", headers={"Content-Encoding": "gzip"})
        brotli = client.post("/", content=b"{}", headers={"Content-Encoding": "br"})
    assert [not_json.status_code, bad_gzip.status_code, brotli.status_code] == [400, 400, 415]
    assert server.received() == []
    assert {r.fault for r in server.requests()} == {"bad_request"}


def test_fail_next_with_retry_after(server: FaultServer) -> None:
    """fail_next answers the status with Retry-After; failed requests are not received."""
    server.fail_next(2, 429, retry_after="3")
    with httpx.Client(base_url=server.url, timeout=2) as client:
        responses = [client.post("/v1/track", json=_event("m1")) for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers["retry-after"] == "3"
    assert "retry-after" not in responses[2].headers
    assert server.message_ids() == ["m1"]
    assert [(r.status, r.fault) for r in server.requests()] == [
        (429, "fail"),
        (429, "fail"),
        (200, None),
    ]
    assert server.pending_faults == 0


def test_faults_are_taken_in_the_order_programmed(server: FaultServer) -> None:
    """Queued faults apply one per request, in the order they were programmed."""
    server.fail_next(1, 503)
    server.drop_next(1)
    server.fail_next(1, 500)
    outcomes: list[int | str] = []
    with httpx.Client(base_url=server.url, timeout=2) as client:
        for index in range(4):
            try:
                outcomes.append(client.post("/", json=_event(f"m{index}")).status_code)
            except httpx.TransportError as exc:
                outcomes.append(type(exc).__name__)
    assert outcomes == [503, "RemoteProtocolError", 500, 200]
    assert server.message_ids() == ["m3"]


def test_delay_next_answers_slowly(server: FaultServer) -> None:
    """delay_next holds the answer for the given time, then answers normally."""
    server.delay_next(1, 0.3)
    started = time.monotonic()
    response = httpx.post(server.url, json=_event("m1"), timeout=2)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert server.message_ids() == ["m1"]
    assert server.received()[0].fault == "delay"


def test_delayed_request_whose_client_gave_up_is_not_counted(server: FaultServer) -> None:
    """A delayed request whose client timed out is not answered and not counted."""
    server.delay_next(1, 0.3)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url, json=_event("m1"), timeout=0.1)
    assert server.wait_idle(timeout=2)
    assert server.requests()[0].status is None
    assert server.message_ids() == []
    assert httpx.post(server.url, json=_event("m1"), timeout=2).status_code == 200
    assert server.message_ids() == ["m1"]


def test_drop_next_closes_without_a_response(server: FaultServer) -> None:
    """drop_next closes the connection unanswered; the retry is received once."""
    server.drop_next(1)
    with httpx.Client(base_url=server.url, timeout=2) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post("/v1/track", json=_event("m1"))
        assert client.post("/v1/track", json=_event("m1")).status_code == 200
    assert server.message_ids() == ["m1"]
    dropped = server.requests()[0]
    assert (dropped.fault, dropped.status, dropped.message_ids) == ("drop", None, ("m1",))


def test_hang_next_never_answers_and_close_is_prompt() -> None:
    """A hung request times the client out; closing the server returns at once, no thread left."""
    with FaultServer() as server:
        server.hang_next(1)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url, json=_event("m1"), timeout=0.2)
        assert server.wait_for_requests(1, timeout=1)
        assert not server.requests()[0].finished
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert server.message_ids() == []
    assert server.requests()[0].fault == "hang"
    assert _server_threads() == []


def test_close_releases_held_requests_unanswered() -> None:
    """Closing with hung and paused requests in flight drops them fast and counts none."""
    server = FaultServer().start()
    server.hang_next(1)
    with ThreadPoolExecutor(2) as pool:
        hung = pool.submit(httpx.post, server.url, json=_event("m1"), timeout=5)
        assert server.wait_for_requests(1, timeout=1)
        server.pause()
        paused = pool.submit(httpx.post, server.url, json=_event("m2"), timeout=5)
        assert server.wait_for_requests(2, timeout=1)
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 1.0
        for future in (hung, paused):
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                future.result(timeout=2)
    assert server.message_ids() == []
    assert [r.status for r in server.requests()] == [None, None]
    assert not server.listening
    assert _server_threads() == []
    server.close()  # idempotent


def test_refuse_for_then_listen_again_on_the_same_port(server: FaultServer) -> None:
    """refuse_for refuses connections (even on a kept-alive client), then the same URL works."""
    url = server.url
    with httpx.Client(base_url=url, timeout=2) as client:
        assert client.post("/", json=_event("m1")).status_code == 200
        server.refuse_for(0.3)
        assert not server.listening
        with pytest.raises(httpx.ConnectError):
            client.post("/", json=_event("m2"))
        assert server.wait_listening(timeout=2)
        assert client.post("/", json=_event("m2")).status_code == 200
    assert server.url == url
    assert server.message_ids() == ["m1", "m2"]


def test_reject_larger_than(server: FaultServer) -> None:
    """Bodies over the limit get 413 (not counted) until the limit is lifted."""
    server.reject_larger_than(200)
    small = _event("s1")
    large = _event("l1", properties={"padding": "x" * 300})
    with httpx.Client(base_url=server.url, timeout=2) as client:
        assert client.post("/", json=small).status_code == 200
        assert client.post("/", json=large).status_code == 413
        server.reject_larger_than(None)
        assert client.post("/", json=large).status_code == 200
    assert server.message_ids() == ["s1", "l1"]
    assert [(r.status, r.fault) for r in server.requests()] == [
        (200, None),
        (413, "too_large"),
        (200, None),
    ]


def test_set_status(server: FaultServer) -> None:
    """set_status changes the success status; a 202 counts as received."""
    server.set_status(202)
    assert httpx.post(server.url, json=_event("m1"), timeout=2).status_code == 202
    server.set_status(503)
    assert httpx.post(server.url, json=_event("m2"), timeout=2).status_code == 503
    assert server.message_ids() == ["m1"]


def test_pause_and_resume(server: FaultServer) -> None:
    """A paused server holds requests unanswered until resumed; wait_for sees them then."""
    server.pause()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(httpx.post, server.url, json=_event("m1"), timeout=5)
        assert server.wait_for_requests(1, timeout=1)
        assert not server.wait_for(1, timeout=0.1)
        assert server.requests()[0].status is None
        server.resume()
        assert server.wait_for(1, timeout=2)
        assert future.result(timeout=2).status_code == 200
    assert server.message_ids() == ["m1"]


def test_keep_alive_reuses_one_connection(server: FaultServer) -> None:
    """Several requests over one httpx.Client go over a single kept-alive connection."""
    with httpx.Client(base_url=server.url, timeout=2) as client:
        statuses = [client.post("/", json=_event(f"m{i}")).status_code for i in range(5)]
    assert statuses == [200] * 5
    assert len({r.connection for r in server.requests()}) == 1
    assert server.message_ids() == [f"m{i}" for i in range(5)]


def test_concurrent_requests_are_all_accepted(server: FaultServer) -> None:
    """Eight requests in flight at once (held together by pause) are all accepted."""
    sent = [f"m{i}" for i in range(8)]
    server.pause()
    with httpx.Client(base_url=server.url, timeout=5) as client, ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client.post, "/", json=_event(mid)) for mid in sent]
        assert server.wait_for_requests(8, timeout=2)  # all eight held at the same time
        server.resume()
        assert [f.result(timeout=2).status_code for f in futures] == [200] * 8
    assert sorted(server.message_ids()) == sent
    assert len({r.connection for r in server.requests()}) == 8


def test_reset_forgets_everything(server: FaultServer) -> None:
    """reset() clears records, queued faults, the size limit, the pause and refusal."""
    httpx.post(server.url, json=_event("m1"), timeout=2)
    server.fail_next(3)
    server.reject_larger_than(1)
    server.set_status(202)
    server.refuse_for(5)
    server.reset()
    assert server.listening
    assert (server.requests(), server.pending_faults) == ([], 0)
    assert httpx.post(server.url, json=_event("m2"), timeout=2).status_code == 200
    assert server.message_ids() == ["m2"]


def test_invalid_arguments_are_refused() -> None:
    """Programming nonsense raises ValueError; a server is started only once."""
    with FaultServer() as server:
        with pytest.raises(ValueError):
            server.fail_next(0)
        with pytest.raises(ValueError):
            server.fail_next(1, 200)
        with pytest.raises(ValueError):
            server.delay_next(1, -1)
        with pytest.raises(ValueError):
            server.set_status(99)
        with pytest.raises(RuntimeError):
            server.start()
    with pytest.raises(RuntimeError):
        FaultServer().url  # noqa: B018
