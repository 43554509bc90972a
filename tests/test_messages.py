"""Messages and JSON normalisation: anything becomes JSON, nothing raises."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumentor._messages import (
    GroupMessage,
    IdentifyMessage,
    TrackMessage,
    message_from_data,
    message_to_data,
    new_message_id,
    to_json_compatible,
)

UTC = dt.timezone.utc


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),
        (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05.000Z"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (decimal.Decimal("1.10"), "1.10"),
        (decimal.Decimal("NaN"), None),
        (Color.RED, "red"),
        (b"caf\xc3\xa9", "café"),
        (b"\xff\x00", "ff00"),
        ({3, 1, 2}, [1, 2, 3]),
        ((1, "a"), [1, "a"]),
        (Point(1, 2.5), {"x": 1, "y": 2.5}),
        (math.nan, None),
        (-math.inf, None),
        ({1: "a", None: "b"}, {"1": "a", "None": "b"}),
        (True, True),
    ],
)
def test_known_types(value: Any, expected: Any) -> None:
    """Each common Python type has a defined JSON form."""
    assert to_json_compatible(value) == expected


def test_unknown_objects_become_their_str_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Anything else is sent as str(), logged once per type."""

    class Money:
        def __str__(self) -> str:
            return "12.00 EUR"

    assert to_json_compatible({"a": Money(), "b": Money()}) == {
        "a": "12.00 EUR",
        "b": "12.00 EUR",
    }
    assert len([r for r in caplog.records if "Money" in r.getMessage()]) == 1


def test_broken_str_and_cycles_do_not_raise() -> None:
    """A raising __str__ and self-references are replaced, not propagated."""
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    out = to_json_compatible({"bad": Unprintable(), "cyclic": cyclic})
    assert out["bad"] == "<unprintable Unprintable>"
    assert out["cyclic"] == {"self": "<cycle>"}


def test_deep_nesting_is_cut() -> None:
    """Nesting past 32 levels becomes a marker instead of a RecursionError."""
    deep: Any = "leaf"
    for _ in range(5000):
        deep = [deep]
    json.dumps(to_json_compatible(deep))


def test_message_ids_are_unique_uuid4() -> None:
    """Each message id is a fresh UUID4."""
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_track_to_dict_shape() -> None:
    """A track's dict has the group in context.groupId and an ISO timestamp."""
    msg = TrackMessage(
        user_id="u",
        event="Report_Created",
        group_id="p",
        group_type="project",
        category="core_value",
        properties={"n": decimal.Decimal("2")},
        timestamp=dt.datetime(2026, 1, 1, tzinfo=UTC),
        message_id="m",
    )
    assert msg.to_dict() == {
        "type": "track",
        "messageId": "m",
        "userId": "u",
        "event": "Report_Created",
        "properties": {"n": "2"},
        "context": {"groupId": "p"},
        "timestamp": "2026-01-01T00:00:00.000Z",
    }


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.datetimes()
    | st.dates()
    | st.decimals()
    | st.uuids(),
    lambda children: (
        st.lists(children)
        | st.dictionaries(st.text() | st.integers(), children)
        | st.tuples(children, children)
        | st.frozensets(st.integers())
    ),
    max_leaves=30,
)


@given(json_values)
def test_anything_becomes_serialisable(value: Any) -> None:
    """Whatever goes in, json.dumps accepts what comes out (no NaN either)."""
    json.dumps(to_json_compatible(value), allow_nan=False)


class HostileInt(int):
    def __int__(self) -> int:
        raise RuntimeError("no int for you")

    def __index__(self) -> int:
        raise RuntimeError("no index for you")


class BrokenZone(dt.tzinfo):
    def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("no offset")

    def dst(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, d: dt.datetime | None) -> str:
        return "broken"


def test_hostile_values_replace_only_themselves() -> None:
    """A value whose conversion raises becomes its str() (or a marker); its siblings survive."""
    released = memoryview(b"abc")
    released.release()
    out = to_json_compatible(
        {
            "hostile": HostileInt(3),
            "zone": dt.datetime(2026, 1, 1, tzinfo=BrokenZone()),
            "released": released,
            "fine": 1,
        }
    )
    assert out["fine"] == 1
    assert isinstance(out["hostile"], str)
    assert isinstance(out["zone"], str)
    assert isinstance(out["released"], str)
    json.dumps(out)


class TestLosslessForm:
    """message_to_data / message_from_data: what a queue between processes carries."""

    NOW = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)

    @pytest.mark.parametrize(
        "message",
        [
            IdentifyMessage("u_1", "acc_1", {"plan": "pro"}, NOW),
            IdentifyMessage("u_1", None, {}, NOW),
            GroupMessage("ws_1", "workspace", "acc_1", "u_1", {"group_type": "workspace"}, NOW),
            GroupMessage("acc_1", "account", None, None, {}, NOW),
            TrackMessage(
                "u_1",
                "Report_Created",
                "proj_1",
                "project",
                "core_value",
                {"n": 1},
                NOW,
                {"traceId": "ab"},
            ),
            TrackMessage("u_1", "Plan_Upgraded", None, "account", "billing", {}, NOW),
        ],
        ids=lambda m: m.type,
    )
    def test_round_trip_through_json_keeps_everything(self, message: Any) -> None:
        """Every message type survives a JSON round trip, id and timestamp to the microsecond."""
        data = json.loads(json.dumps(message_to_data(message)))
        rebuilt = message_from_data(data)
        assert rebuilt == message
        assert rebuilt.message_id == message.message_id
        assert rebuilt.timestamp == self.NOW  # to the microsecond, time zone included

    def test_properties_are_normalised_to_json(self) -> None:
        """Property values such as datetimes are stored as JSON (ISO 8601 UTC strings)."""
        message = TrackMessage(
            "u", "Report_Created", None, "project", "core_value", {"at": self.NOW}, self.NOW
        )
        assert message_to_data(message)["properties"] == {"at": "2026-03-01T12:30:15.123Z"}

    @pytest.mark.parametrize(
        ("change", "complaint"),
        [
            ({"type": "page"}, "unknown message type"),
            ({"user_id": None}, "'user_id' must not be null"),
            ({"event": 7}, "'event' must be a string"),
            ({"timestamp": "yesterday"}, "is not an ISO 8601 time"),
            ({"properties": [1, 2]}, "'properties' must be a JSON object"),
        ],
    )
    def test_malformed_data_raises_value_error_saying_what(
        self, change: dict[str, Any], complaint: str
    ) -> None:
        """Malformed stored data raises ValueError naming the wrong field or type."""
        message = TrackMessage("u", "Report_Created", None, "project", "core_value", {}, self.NOW)
        data = {**message_to_data(message), **change}
        with pytest.raises(ValueError, match=complaint):
            message_from_data(data)

    def test_missing_field_and_non_object(self) -> None:
        """A missing field or a non-object raises ValueError saying which."""
        data = message_to_data(IdentifyMessage("u", None, {}, self.NOW))
        del data["message_id"]
        with pytest.raises(ValueError, match="needs 'message_id'"):
            message_from_data(data)
        with pytest.raises(ValueError, match="must be a JSON object"):
            message_from_data(["identify"])  # type: ignore[arg-type]
