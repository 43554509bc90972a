"""SegmentTransport against a loopback server that checks Segment's documented HTTP API.

The server is written from Segment's documentation, not from the transport's code, and answers
400 to anything the documentation does not allow (the test then fails on what it recorded).
Pages under https://www.twilio.com/docs/segment/connections/:

- ``sources/catalog/libraries/server/http-api/`` (the HTTP Tracking API): ``POST /v1/batch``;
  ``Authorization: Basic`` base64 of the write key and a colon; ``Content-Type:
  application/json``; a body ``{"batch": [...]}`` of identify, group and track calls, each with
  a valid ``type``; every payload has a ``userId`` or an ``anonymousId``; a track has an
  ``event``; 500 KB per batch request and 32 KB per call; ``messageId`` is what Segment
  de-duplicates on, so each is unique.
- ``spec/common/`` (common fields): the top-level fields a client sends (``anonymousId``,
  ``context``, ``integrations``, ``messageId``, ``sentAt``, ``timestamp``, ``type``,
  ``userId``; ``receivedAt`` and ``version`` are Segment's own), in camelCase; every timestamp
  an ISO 8601 string; ``context.groupId`` a string.
- ``spec/identify/``, ``spec/group/``, ``spec/track/``: ``traits`` (identify, group),
  ``groupId`` (group, required), ``event`` and ``properties`` (track). Any other top-level
  field is refused.

The whole bundle (identify, a group call per level with ``group_type`` and ``parent_group_id``,
the track) goes through ``instrumentor.configure(...)`` with a real ``SegmentTransport`` for
each ``group_attribution``, and the track's exact wire form is checked for each.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import instrumentor
from instrumentor import bound_context, configure, track
from instrumentor.transports import SegmentTransport
from tests.plan import Events

WRITE_KEY = "wk_contract_0123456789"
LIBRARY = {"name": "instrumentor", "version": instrumentor.__version__}

# Spec common fields a client may send; receivedAt and version are set by Segment itself.
COMMON_FIELDS = frozenset(
    {"anonymousId", "context", "integrations", "messageId", "sentAt", "timestamp", "type", "userId"}
)
FIELDS_BY_TYPE = {
    "identify": COMMON_FIELDS | {"traits"},
    "group": COMMON_FIELDS | {"groupId", "traits"},
    "track": COMMON_FIELDS | {"event", "properties"},
}
BATCH_FIELDS = frozenset({"batch", "sentAt", "context", "integrations"})
MAX_BATCH_BYTES = 500 * 1000  # "500KB per batch request" (read in decimal, the stricter way)
MAX_CALL_BYTES = 32 * 1000  # "32KB per call"
CAMEL_CASE = re.compile(r"[a-z][a-zA-Z0-9]*")
ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def iso_8601_problem(where: str, value: Any) -> list[str]:
    """What is wrong with ``value`` as an ISO 8601 date-time string (nothing if it is one)."""
    if not isinstance(value, str) or not ISO_8601.fullmatch(value):
        return [f"{where} is not an ISO 8601 date-time: {value!r}"]
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return [f"{where} is not a real date-time: {value!r}"]
    return []


def non_empty_string(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def call_problems(index: int, call: Any, seen_ids: set[str]) -> list[str]:
    """Everything in one batch item that Segment's documentation does not allow."""
    where = f"batch[{index}]"
    if not isinstance(call, dict):
        return [f"{where} is not an object"]
    kind = call.get("type")
    if kind not in FIELDS_BY_TYPE:
        return [f"{where}.type is not identify, group or track: {kind!r}"]
    problems = [
        f"{where} has field {k!r}, not in the {kind} spec"
        for k in call
        if k not in FIELDS_BY_TYPE[kind]
    ]
    problems += [
        f"{where} field {k!r} is not camelCase" for k in call if not CAMEL_CASE.fullmatch(k)
    ]
    message_id = call.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        problems.append(f"{where} has no messageId")
    elif message_id in seen_ids:
        problems.append(f"{where}.messageId {message_id!r} was sent before")
    else:
        seen_ids.add(message_id)
    problems += iso_8601_problem(f"{where}.timestamp", call.get("timestamp"))
    if "sentAt" in call:
        problems += iso_8601_problem(f"{where}.sentAt", call["sentAt"])
    if not (non_empty_string(call.get("userId")) or non_empty_string(call.get("anonymousId"))):
        problems.append(f"{where} has neither a userId nor an anonymousId")
    for key in ("userId", "anonymousId"):
        if key in call and not non_empty_string(call[key]):
            problems.append(f"{where}.{key} is not a non-empty string")
    for key in ("context", "integrations", "traits", "properties"):
        if key in call and not isinstance(call[key], dict):
            problems.append(f"{where}.{key} is not an object")
    if kind == "group" and not non_empty_string(call.get("groupId")):
        problems.append(f"{where} is a group call without a groupId")
    if kind == "track" and not non_empty_string(call.get("event")):
        problems.append(f"{where} is a track call without an event")
    context = call.get("context")
    if isinstance(context, dict):
        problems += [
            f"{where}.context.{k} is not camelCase" for k in context if not CAMEL_CASE.fullmatch(k)
        ]
        if "groupId" in context and not non_empty_string(context["groupId"]):
            problems.append(f"{where}.context.groupId is not a non-empty string")
        library = context.get("library")
        if library is not None and not (
            isinstance(library, dict)
            and all(non_empty_string(library.get(k)) for k in ("name", "version"))
        ):
            problems.append(f"{where}.context.library is not {{name, version}}")
    if len(json.dumps(call, separators=(",", ":")).encode()) > MAX_CALL_BYTES:
        problems.append(f"{where} is over 32 KB")
    return problems


def request_problems(
    method: str, path: str, headers: dict[str, str], raw: bytes, seen_ids: set[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """What is wrong with a request to the tracking API, and the calls of its batch."""
    problems = []
    if (method, path) != ("POST", "/v1/batch"):
        problems.append(f"{method} {path} is not POST /v1/batch")
    expected = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    if headers.get("authorization") != expected:
        problems.append("Authorization is not Basic base64(write key + ':')")
    if headers.get("content-type", "").split(";")[0].strip() != "application/json":
        problems.append(f"Content-Type is {headers.get('content-type')!r}, not application/json")
    if headers.get("content-encoding") == "gzip":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return [*problems, "the body is not gzip"], []
    if len(raw) > MAX_BATCH_BYTES:
        problems.append("the batch request is over 500 KB")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return [*problems, "the body is not JSON"], []
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list) or not body["batch"]:
        return [*problems, 'the body is not {"batch": [...]} with calls in it'], []
    problems += [f"the body has field {k!r}" for k in body if k not in BATCH_FIELDS]
    if "sentAt" in body:
        problems += iso_8601_problem("sentAt", body["sentAt"])
    for index, call in enumerate(body["batch"]):
        problems += call_problems(index, call, seen_ids)
    return problems, [c for c in body["batch"] if isinstance(c, dict)]


def body_fields(headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    """The accepted body's fields besides ``batch``."""
    if headers.get("content-encoding") == "gzip":
        raw = gzip.decompress(raw)
    return {k: v for k, v in json.loads(raw).items() if k != "batch"}


@dataclass
class TrackingApi:
    """What the loopback tracking API received: the calls it accepted and what it refused."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [call for call in self.calls if call.get("type") == kind]


def _handler(api: TrackingApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with api.lock:
                problems, calls = request_problems(
                    self.command, self.path, headers, raw, api.seen_ids
                )
                api.problems.extend(problems)
                if not problems:
                    api.calls.extend(calls)
                    api.bodies.append({"batch": calls, **body_fields(headers, raw)})
            status, answer = (400, {"problems": problems}) if problems else (200, {"success": True})
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def api() -> Iterator[TrackingApi]:
    """A tracking API on 127.0.0.1 that checks every request against Segment's documentation."""
    tracking = TrackingApi(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(tracking))
    tracking.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield tracking
    finally:
        instrumentor.reset_configuration()
        server.shutdown()
        server.server_close()
        thread.join(5)


def send_bundle(api: TrackingApi, **options: Any) -> dict[str, Any]:
    """Track one event with a user in three groups through configure(); return its track call."""
    configure(transports=[SegmentTransport(WRITE_KEY, endpoint=api.url, **options)])
    with bound_context(
        user_id="usr_1",
        user_traits={"email": "jo@acme.test"},
        account_id="acc_1",
        account_name="Acme",
        workspace_id="ws_1",
        project_id="p_1",
    ):
        track(Events.REPORT_CREATED, properties={"size": 3})
    result = instrumentor.flush(10)
    assert api.problems == [], api.problems
    assert (result.pending, result.failed) == (0, 0), result
    (track_call,) = api.of_type("track")
    return track_call


def check_bundle(api: TrackingApi) -> None:
    """The identify and the three group calls, as the documentation has them."""
    (identify,) = api.of_type("identify")
    assert identify["userId"] == "usr_1"
    assert identify["traits"] == {"email": "jo@acme.test"}
    groups = api.of_type("group")
    assert [(g["groupId"], g["userId"], g["traits"]) for g in groups] == [
        ("acc_1", "usr_1", {"name": "Acme", "group_type": "account"}),
        ("ws_1", "usr_1", {"group_type": "workspace", "parent_group_id": "acc_1"}),
        ("p_1", "usr_1", {"group_type": "project", "parent_group_id": "ws_1"}),
    ]
    assert all(g["context"] == {"library": LIBRARY} for g in groups)
    (body,) = api.bodies
    assert set(body) == {"batch", "sentAt"}
    assert [c["type"] for c in body["batch"]] == ["identify", "group", "group", "group", "track"]


def the_track(call: dict[str, Any]) -> dict[str, Any]:
    """The track call without the fields that differ on every run."""
    assert non_empty_string(call.pop("messageId"))
    assert iso_8601_problem("timestamp", call.pop("timestamp")) == []
    return call


GROUPS = {"account": "acc_1", "workspace": "ws_1", "project": "p_1"}
BASE = {"type": "track", "userId": "usr_1", "event": "Report_Created"}

WIRE_FORMS: dict[str, dict[str, Any]] = {
    "none": {**BASE, "properties": {"size": 3}, "context": {"library": LIBRARY}},
    "context": {
        **BASE,
        "properties": {"size": 3},
        "context": {"groupId": "p_1", "library": LIBRARY},
    },
    "posthog": {
        **BASE,
        "properties": {"size": 3, "$groups": GROUPS},
        "context": {"library": LIBRARY},
    },
    "mixpanel": {
        **BASE,
        "properties": {
            "size": 3,
            "account_id": "acc_1",
            "workspace_id": "ws_1",
            "project_id": "p_1",
        },
        "context": {"library": LIBRARY},
    },
    "amplitude": {
        **BASE,
        "properties": {"size": 3},
        "context": {"library": LIBRARY},
        "integrations": {"Amplitude": {"groups": GROUPS}},
    },
}


@pytest.mark.parametrize("attribution", sorted(WIRE_FORMS))
def test_bundle_meets_the_documented_api_in_every_attribution(
    api: TrackingApi, attribution: str
) -> None:
    """Every call passes the documented checks; the track has the mode's exact wire form."""
    call = send_bundle(api, group_attribution=attribution)
    check_bundle(api)
    assert the_track(call) == WIRE_FORMS[attribution]


def test_none_sends_no_group_id_in_any_context(api: TrackingApi) -> None:
    """The default: groups are linked by the group calls only; no call has context.groupId."""
    call = send_bundle(api)
    assert "groupId" not in call["context"]
    assert all("groupId" not in c["context"] for c in api.calls)
    assert "integrations" not in call
    assert "$groups" not in call["properties"]


def test_posthog_carries_every_level(api: TrackingApi) -> None:
    """posthog: properties.$groups has the three levels, top first, and nothing else is added."""
    call = send_bundle(api, group_attribution="posthog")
    assert list(call["properties"]["$groups"].items()) == list(GROUPS.items())


def test_gzip_meets_the_documented_api(api: TrackingApi) -> None:
    """A gzip-compressed batch passes the same checks."""
    call = send_bundle(api, gzip=True, group_attribution="amplitude")
    check_bundle(api)
    assert the_track(call) == WIRE_FORMS["amplitude"]


def test_group_call_without_a_user_has_an_anonymous_id(api: TrackingApi) -> None:
    """A group call made with no user bound is accepted: it carries an anonymousId."""
    configure(transports=[SegmentTransport(WRITE_KEY, endpoint=api.url)])
    with bound_context(account_id="acc_9", account_name="Nine"):
        instrumentor.group()
    instrumentor.flush(10)
    assert api.problems == [], api.problems
    (call,) = api.of_type("group")
    assert "userId" not in call
    assert non_empty_string(call["anonymousId"])
    assert call["groupId"] == "acc_9"


def test_mixpanel_keeps_a_property_the_event_sets(api: TrackingApi) -> None:
    """mixpanel: a property the event already sets under a group key's name is not overwritten."""
    configure(
        transports=[SegmentTransport(WRITE_KEY, endpoint=api.url, group_attribution="mixpanel")]
    )
    with bound_context(user_id="usr_1", account_id="acc_1", workspace_id="ws_1", project_id="p_1"):
        track(Events.REPORT_CREATED, properties={"project_id": "mine"})
    instrumentor.flush(10)
    assert api.problems == [], api.problems
    (call,) = api.of_type("track")
    assert call["properties"] == {
        "project_id": "mine",
        "account_id": "acc_1",
        "workspace_id": "ws_1",
    }


def _valid_call() -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": "m-1",
        "userId": "u",
        "event": "E",
        "properties": {},
        "context": {"library": LIBRARY},
        "timestamp": "2024-05-01T12:00:00.123Z",
    }


REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("snake_case field", {"message_id": "m-2"}),
    ("field outside the spec", {"groupId": "g"}),
    ("no messageId", {"messageId": None}),
    ("timestamp not ISO 8601", {"timestamp": "1714564800"}),
    ("no user", {"userId": None}),
    ("track without event", {"event": None}),
    ("context.groupId not a string", {"context": {"groupId": 5}}),
]


def post(
    api: TrackingApi, call: dict[str, Any], path: str = "/v1/batch", key: str = WRITE_KEY
) -> int:
    """Send one hand-made call as a batch; the status the checker answered."""
    token = base64.b64encode(f"{key}:".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    body = {"batch": [call], "sentAt": "2024-05-01T12:00:01.000Z"}
    return httpx.post(f"{api.url}{path}", json=body, headers=headers, timeout=5).status_code


@pytest.mark.parametrize(("what", "change"), REFUSED, ids=[what for what, _ in REFUSED])
def test_the_server_refuses_what_the_documentation_does_not_allow(
    api: TrackingApi, what: str, change: dict[str, Any]
) -> None:
    """The checker is no rubber stamp: each violation is answered 400 and recorded."""
    call = {k: v for k, v in {**_valid_call(), **change}.items() if v is not None}
    assert post(api, call) == 400
    assert api.problems


def test_the_server_accepts_a_valid_call_only_from_the_key_at_the_path(api: TrackingApi) -> None:
    """The call the refusals start from is accepted; with another key or path it is refused."""
    assert post(api, _valid_call()) == 200
    assert api.problems == []
    assert post(api, {**_valid_call(), "messageId": "m-3"}, key="other") == 400
    assert post(api, {**_valid_call(), "messageId": "m-4"}, path="/v1/track") == 400
    assert len(api.problems) == 2
