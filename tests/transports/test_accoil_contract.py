"""The Accoil contract: a loopback ingress that accepts only what Accoil documents.

The schema below is written from Accoil's documentation (developer.accoil.com, "Ingress API":
``/v2/identify``, ``/v2/group``, ``/v2/track`` and the legacy ``/v1/users``, ``/v1/groups``,
``/v1/events``), not from our code. Any field outside it, a wrong type, a missing required field,
a wrong auth form or time format is answered 400 and recorded as a violation.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import instrumentor
from instrumentor import bound_context, track
from instrumentor.transports import AccoilTransport
from tests.plan import Events

KEY = "acc_live_key_0123"

#: path -> (required fields, optional fields), each field -> its JSON type.
V2: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "/v2/identify": ({"userId": str}, {"groupId": str, "traits": dict, "timestamp": str}),
    "/v2/group": ({"groupId": str}, {"userId": str, "traits": dict, "timestamp": str}),
    "/v2/track": ({"userId": str, "event": str}, {"timestamp": str}),
}
V1: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "/v1/users": (
        {"api_key": str, "user_id": str},
        {"group_id": str, "traits": dict, "timestamp": int},
    ),
    "/v1/groups": (
        {"api_key": str, "group_id": str},
        {"user_id": str, "traits": dict, "timestamp": int},
    ),
    "/v1/events": ({"api_key": str, "user_id": str, "event": str}, {"timestamp": int}),
}


def _iso8601(value: str) -> bool:
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def violations(path: str, headers: dict[str, str], body: Any, key: str) -> list[str]:
    """What in one request breaks Accoil's documented contract (empty: none)."""
    found: list[str] = []
    schema = V2.get(path) or V1.get(path)
    if schema is None:
        return [f"unknown path {path}"]
    if headers.get("content-type") != "application/json":
        found.append("content-type is not application/json")
    if path.startswith("/v2/") and headers.get("authorization") != f"Basic {key}":
        found.append("v2 needs 'Authorization: Basic <raw api key>'")
    if path.startswith("/v1/") and "authorization" in headers:
        found.append("v1 carries the key in the body, not in a header")
    if not isinstance(body, dict):
        return [*found, "the body is not a JSON object"]
    required, optional = schema
    for name, needed in required.items():
        if not isinstance(body.get(name), needed) or body.get(name) == "":
            found.append(f"{name} is required as a non-empty {needed.__name__}")
    for name, value in body.items():
        kind: type | None = required.get(name) or optional.get(name)
        if kind is None:
            found.append(f"{name} is not a documented field of {path}")
        elif not isinstance(value, kind) or isinstance(value, bool):
            found.append(f"{name} must be a {kind.__name__}")
    stamp = body.get("timestamp")
    if path.startswith("/v2/") and isinstance(stamp, str) and not _iso8601(stamp):
        found.append("timestamp is not ISO 8601 with a zone")
    if path.startswith("/v1/") and body.get("api_key") != key:
        found.append("api_key is not the key")
    if path.startswith("/v1/") and isinstance(stamp, int) and stamp < 10**12:
        found.append("timestamp is not in Unix milliseconds")
    return found


@dataclass
class Ingress:
    """What the contract server accepted, and every violation it refused."""

    key: str
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: list[tuple[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def ingress() -> Iterator[Ingress]:
    state = Ingress(KEY)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            found = violations(self.path, headers, body, state.key)
            with state.lock:
                if found:
                    state.refused.append((self.path, found))
                else:
                    state.accepted.append((self.path, body))
            self.send_response(400 if found else 202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run_a_session() -> None:
    """Sign in to proj_1, switch to proj_2 and back, change plan: every kind of call."""
    for project, plan in (("proj_1", "free"), ("proj_2", "free"), ("proj_1", "pro")):
        with bound_context(
            user_id="u_1",
            user_traits={"email": "jane@example.com", "plan": plan},
            account_id="acc_1",
            account_name="Acme",
            workspace_id="ws_1",
            project_id=project,
        ):
            track(Events.REPORT_CREATED)
            track(Events.PLAN_UPGRADED)
    assert instrumentor.flush(10).pending == 0


@pytest.mark.parametrize("api_version", ["v2", "v1"])
def test_every_call_keeps_to_the_documented_schema(ingress: Ingress, api_version: str) -> None:
    """Identify, group and track under v2 and v1: nothing outside Accoil's documented fields."""
    transport = AccoilTransport(KEY, endpoint=ingress.url, api_version=api_version)  # type: ignore[arg-type]
    instrumentor.configure(transports=[transport])
    run_a_session()
    assert ingress.refused == []
    prefix = f"/{api_version}/"
    paths = [path for path, _ in ingress.accepted]
    assert all(path.startswith(prefix) for path in paths)
    assert paths.count(prefix + ("track" if api_version == "v2" else "events")) == 6


def test_v2_tracks_carry_only_user_event_and_time(ingress: Ingress) -> None:
    """No properties, no context, no messageId: Accoil attributes by membership."""
    instrumentor.configure(transports=[AccoilTransport(KEY, endpoint=ingress.url)])
    run_a_session()
    tracks = [body for path, body in ingress.accepted if path == "/v2/track"]
    assert {frozenset(body) for body in tracks} == {frozenset({"userId", "event", "timestamp"})}


def test_v1_group_calls_link_their_user(ingress: Ingress) -> None:
    """Every v1 group call made for a user carries user_id, or the user is never linked."""
    instrumentor.configure(
        transports=[AccoilTransport(KEY, endpoint=ingress.url, api_version="v1")]
    )
    run_a_session()
    groups = [body for path, body in ingress.accepted if path == "/v1/groups"]
    assert groups
    assert all(body.get("user_id") == "u_1" for body in groups)
    projects = [b["group_id"] for b in groups if b["traits"]["group_type"] == "project"]
    assert projects == ["proj_1", "proj_2", "proj_1"]


def test_a_staging_key_goes_to_staging_without_its_marker() -> None:
    """A key marked stg_ goes to Accoil's staging ingress, the marker stripped as Accoil's own
    integrations do; an explicit endpoint still wins."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    mock = httpx.MockTransport(record)
    instrumentor.configure(transports=[AccoilTransport("STG_" + KEY, http_transport=mock)])
    with bound_context(user_id="u_1", account_id="acc_1"):
        track(Events.PLAN_UPGRADED)
    assert instrumentor.flush(10).pending == 0
    assert {r.url.host for r in seen} == {"instaging.accoil.com"}
    assert {r.headers["authorization"] for r in seen} == {f"Basic {KEY}"}
    production = AccoilTransport(KEY, http_transport=mock)
    assert repr(production) == "AccoilTransport(endpoint='https://in.accoil.com', api_version='v2')"
    assert "proxy.example" in repr(AccoilTransport("stg_x", endpoint="https://proxy.example"))
