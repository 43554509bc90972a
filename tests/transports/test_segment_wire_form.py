"""SegmentTransport writes each call straight from the message, byte for byte the spec form.

The transport writes a message's compact JSON without building the call as a dict or calling
``to_dict()`` (the worker's cost per event). What it sends must stay exactly what the spec form
was: ``REFERENCE`` below is that form as it was built before, from ``to_dict()``, one
``json.dumps`` per message, and the property test compares whole request bodies with it for
every ``group_attribution``, hostile values, non-ASCII text, lone surrogates, unset fields and
messages that cannot be encoded (refused alone, with the same reason).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import instrumentor
from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor.exceptions import INVALID_MESSAGE, TOO_LARGE, PartialDeliveryError
from instrumentor.transports import SegmentTransport
from instrumentor.transports import _segment as segment_module
from instrumentor.transports._http import invalid_reason
from instrumentor.transports._segment import MAX_MESSAGE_BYTES
from tests.transports.recording import RecordingHandler

LIBRARY = {"name": "instrumentor", "version": instrumentor.__version__}
ATTRIBUTIONS = ("none", "context", "posthog", "mixpanel", "amplitude")
NOW = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
HUGE = 10**5000  # more digits than Python turns into text: json.dumps raises ValueError
#: Such ints, built (hypothesis cannot print them in its reprs).
huge_ints = st.builds(lambda digits: 10**digits, st.integers(4301, 4400))
GROUP_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:instrumentor:group")


# --- the reference: the spec form as it was built from to_dict() -------------------------------


def reference_call(message: Message, attribution: str) -> dict[str, Any]:
    """The spec call as the transport built it before: from ``to_dict()``, then copied."""
    data = message.to_dict()
    context: dict[str, Any] = dict(data.get("context", {}))
    context.pop("groupId", None)
    call: dict[str, Any] = {"type": message.type, "messageId": message.message_id}
    if isinstance(message, GroupMessage):
        call.update((k, data[k]) for k in ("groupId", "userId", "traits") if k in data)
        if message.user_id is None:
            call["anonymousId"] = str(uuid.uuid5(GROUP_NAMESPACE, message.group_id))
    else:
        if attribution == "context" and message.group_id is not None:
            context["groupId"] = message.group_id
        keys = ("userId", "event", "properties", "traits")
        call.update((k, data[k]) for k in keys if k in data)
        if isinstance(message, TrackMessage):
            reference_attribute(call, message, attribution)
    context["library"] = LIBRARY
    call.update(timestamp=data["timestamp"], context=context)
    return call


def reference_attribute(call: dict[str, Any], message: TrackMessage, attribution: str) -> None:
    groups: Mapping[str, str] = message.groups
    if not groups and message.group_id is not None:
        groups = {message.group_type: message.group_id}
    if not groups or attribution in ("none", "context"):
        return
    if attribution == "amplitude":
        call["integrations"] = {"Amplitude": {"groups": dict(groups)}}
        return
    properties = dict(call.get("properties", {}))
    if attribution == "posthog":
        properties.setdefault("$groups", dict(groups))
    else:
        for level, group_id in groups.items():
            properties.setdefault(f"{level}_id", group_id)
    call["properties"] = properties


def reference_text(message: Message, attribution: str) -> str:
    """The call's compact JSON, as one json.dumps of it gave (raises as that did)."""
    return json.dumps(
        reference_call(message, attribution), separators=(",", ":"), ensure_ascii=False
    )


def expected(
    batch: Sequence[Message], attribution: str
) -> tuple[list[bytes], list[tuple[int, str]]]:
    """The items the reference sends, and the (index, reason) of each message it refuses."""
    items: list[bytes] = []
    refused: list[tuple[int, str]] = []
    for index, message in enumerate(batch):
        try:
            item = reference_text(message, attribution).encode("utf-8", "replace")
        except Exception as exc:
            refused.append((index, invalid_reason(exc)))
            continue
        if len(item) > MAX_MESSAGE_BYTES:
            refused.append((index, f"message over 32 KB ({TOO_LARGE})"))
        else:
            items.append(item)
    return items, refused


def raw_items(raw: bytes, count: int) -> list[bytes]:
    """``raw`` (calls joined by commas) cut into its ``count`` calls, each as sent."""
    decoder = json.JSONDecoder()
    text = raw.decode("utf-8")
    out: list[bytes] = []
    at = 0
    for _ in range(count):
        _, end = decoder.raw_decode(text, at)
        out.append(text[at:end].encode("utf-8"))
        at = end + 1
    return out


def deliver(
    batch: Sequence[Message], attribution: str
) -> tuple[list[bytes], list[tuple[int, str]]]:
    """What the transport sends (each call's bytes) and refuses, for ``batch``."""
    recorder = RecordingHandler()
    transport = SegmentTransport(
        "wk",
        http_transport=httpx.MockTransport(recorder),
        group_attribution=attribution,  # type: ignore[arg-type]  # one of ATTRIBUTIONS
    )
    error: PartialDeliveryError | None = None
    try:
        transport.deliver(batch)
    except PartialDeliveryError as exc:
        error = exc
    finally:
        transport.close()
    refused: list[tuple[int, str]] = []
    if error is not None:
        assert error.retry == ()
        position = {id(m): i for i, m in enumerate(batch)}
        refused = sorted((position[id(m)], reason) for m, reason in error.failed)
    items: list[bytes] = []
    for request in recorder.requests:
        body = request.content
        head, end = b'{"batch":[', body.rindex(b'],"sentAt":')
        assert body.startswith(head)
        raw = body[len(head) : end]
        items += raw_items(raw, len(json.loads(b"[" + raw + b"]")))
    return items, refused


# --- generated messages -----------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8"), max_size=6),  # any code point that UTF-8 has
    st.sampled_from(["é\u2028ü", "a\ud800b", "\udfff", "\"quote\\'", "\x00\x1f", "😀"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    texts,
    huge_ints,
    st.sampled_from([math.nan, math.inf, dt.date(2024, 1, 2), b"\xff", frozenset({2, 1})]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)
mappings = st.dictionaries(st.one_of(texts, st.integers()), values, max_size=4)
ids = st.one_of(texts.filter(bool), st.sampled_from(["usr_1", "acc_1"]))
maybe_ids = st.one_of(st.none(), ids)
odd_ids: st.SearchStrategy[Any] = st.one_of(huge_ints, st.sampled_from([7, ["u", 1], object()]))
timestamps = st.one_of(
    st.just(NOW),
    st.datetimes(timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=2))])),
    st.datetimes(),  # naive
)
levels = st.sampled_from(["account", "workspace", "project"])
groups = st.dictionaries(levels, st.one_of(ids, odd_ids), max_size=3)
contexts = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={"traceId": texts, "groupId": ids, "library": values, "ip": values},
    ),
)

identifies = st.builds(
    IdentifyMessage,
    user_id=st.one_of(ids, st.none(), odd_ids),
    group_id=maybe_ids,
    traits=mappings,
    timestamp=timestamps,
)
group_calls = st.builds(
    GroupMessage,
    group_id=st.one_of(ids, odd_ids),
    group_type=levels,
    parent_group_id=maybe_ids,
    user_id=maybe_ids,
    traits=mappings,
    timestamp=timestamps,
)
tracks = st.builds(
    TrackMessage,
    user_id=st.one_of(ids, st.none(), odd_ids),
    event=st.one_of(st.just("Report_Created"), texts, st.none()),
    group_id=maybe_ids,
    group_type=levels,
    category=st.just("core_value"),
    properties=mappings,
    timestamp=timestamps,
    context=contexts,
    groups=groups,
)
messages = st.one_of(identifies, group_calls, tracks)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(batch=st.lists(messages, min_size=1, max_size=6), attribution=st.sampled_from(ATTRIBUTIONS))
def test_each_call_is_byte_for_byte_the_spec_form(batch: list[Message], attribution: str) -> None:
    """Whatever the messages hold, the bytes sent and the refusals are the reference's."""
    assert deliver(batch, attribution) == expected(batch, attribution)


def track(**changes: Any) -> TrackMessage:
    message = TrackMessage(
        user_id="usr_1",
        event="Report_Created",
        group_id="p_1",
        group_type="project",
        category="core_value",
        properties={"size": 3},
        timestamp=NOW,
        groups={"account": "acc_1", "workspace": "ws_1", "project": "p_1"},
    )
    return dataclasses.replace(message, **changes)


def test_a_bundle_of_one_event_is_the_spec_form() -> None:
    """An identify, its group calls and the track, sharing their timestamp, as the reference."""
    identify = IdentifyMessage("usr_1", "acc_1", {"email": "jo@acme.test"}, NOW)
    account = GroupMessage("acc_1", "account", None, "usr_1", {"name": "Acme"}, NOW)
    project = GroupMessage("p_1", "project", "acc_1", None, {"group_type": "project"}, NOW)
    batch: list[Message] = [identify, account, project, track(context={"traceId": "t"})]
    for attribution in ATTRIBUTIONS:
        items, refused = deliver(batch, attribution)
        assert refused == []
        assert items == expected(batch, attribution)[0]


@pytest.mark.parametrize("attribution", ["posthog", "amplitude"])
def test_a_message_that_fails_inside_its_groups_costs_no_other(attribution: str) -> None:
    """A group id JSON cannot encode fails that track alone, deep in its properties or
    integrations; the tracks after it, written with the same encoder, all go out."""
    bad = track(groups={"account": "acc_1", "project": HUGE})
    good = [track(properties={"n": n, "nested": {"k": [n]}}) for n in range(20)]
    items, refused = deliver([bad, *good], attribution)
    assert [index for index, _ in refused] == [0]
    assert "ValueError" in refused[0][1]
    assert INVALID_MESSAGE in refused[0][1]
    assert items == expected(good, attribution)[0]


def test_the_32_kb_limit_counts_utf_8_bytes_not_characters() -> None:
    """A message under 32 K characters but over 32 KB in UTF-8 is refused; one that fits goes."""
    (base,) = expected([track(properties={"t": ""})], "none")[0]
    room = MAX_MESSAGE_BYTES - len(base)
    fits = track(properties={"t": "é" * (room // 2)})  # two bytes each
    over = track(properties={"t": "é" * (room // 2 + 1)})
    assert len(reference_text(over, "none")) < MAX_MESSAGE_BYTES  # in characters it would fit
    items, refused = deliver([fits, over], "none")
    assert refused == [(1, f"message over 32 KB ({TOO_LARGE})")]
    assert [len(item) for item in items] == [MAX_MESSAGE_BYTES - room % 2]


def test_a_lone_surrogate_goes_as_a_question_mark_of_one_byte() -> None:
    """A lone surrogate is sent as "?" and counted as the one byte it is sent as."""
    (base,) = expected([track(properties={"t": ""})], "none")[0]
    room = MAX_MESSAGE_BYTES - len(base)
    exact = track(properties={"t": "\ud800" * room})
    items, refused = deliver([exact, track(properties={"t": "a\udfffb"})], "none")
    assert refused == []
    assert [len(item) for item in items] == [MAX_MESSAGE_BYTES, len(base) + 3]
    assert json.loads(items[1])["properties"] == {"t": "a?b"}


def test_messages_are_written_without_to_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport writes each call from the message's fields: ``to_dict()`` is not called
    (it normalised and copied every field once more for nothing)."""
    batch: list[Message] = [
        IdentifyMessage("usr_1", "acc_1", {"plan": "pro"}, NOW),
        GroupMessage("acc_1", "account", None, "usr_1", {"name": "Acme"}, NOW),
        track(),
    ]
    wanted = expected(batch, "posthog")[0]

    def unused(self: object) -> dict[str, Any]:
        raise AssertionError("to_dict() was called")

    for cls in (IdentifyMessage, GroupMessage, TrackMessage):
        monkeypatch.setattr(cls, "to_dict", unused)
    assert deliver(batch, "posthog") == (wanted, [])


def test_without_the_c_encoder_the_bytes_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Python without json's C encoder (e.g. PyPy) the documented one writes the same."""
    identify = IdentifyMessage("usr_1", "acc_1", {"email": "jö@acme.test"}, NOW)
    project = GroupMessage("p_1", "project", "acc_1", None, {"group_type": "project"}, NOW)
    batch: list[Message] = [identify, project, track(user_id=HUGE), track(context={"t": "\ud800"})]
    monkeypatch.setattr(segment_module, "_build_chunker", None)
    for attribution in ATTRIBUTIONS:
        assert deliver(batch, attribution) == expected(batch, attribution)
