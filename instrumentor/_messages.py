"""The messages an emission becomes: identify, group and track, and their JSON normalisation.

Messages are built off the caller's hot path (by a receiver or a delivery worker), each with a
``message_id`` that stays with it across retries, so providers and tests can de-duplicate.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import logging
import math
import os
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

__all__ = [
    "GroupMessage",
    "IdentifyMessage",
    "Message",
    "TrackMessage",
    "message_from_data",
    "message_to_data",
    "new_message_id",
    "to_json_compatible",
]

_log = logging.getLogger("instrumentor")
_MAX_DEPTH = 32
_UTC = _dt.timezone.utc


_id_pool = bytearray()
_id_lock = threading.Lock()


def new_message_id() -> str:
    """A new random message id (a UUID4 in canonical form).

    Randomness is read from ``os.urandom`` 4 KiB at a time (each call releases the GIL, which a
    busy application makes expensive) and the pool is discarded in a forked child, so parent and
    child never share ids.
    """
    global _id_pool
    with _id_lock:
        if len(_id_pool) < 16:
            _id_pool = bytearray(os.urandom(4096))
        raw = _id_pool[-16:]
        del _id_pool[-16:]
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _discard_id_pool() -> None:
    global _id_pool, _id_lock
    _id_pool = bytearray()
    _id_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_discard_id_pool)


def _iso(ts: _dt.datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _strip(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


@dataclass(frozen=True)
class IdentifyMessage:
    """Who the user is: ``identify(userId, groupId, traits)``.

    Attributes:
        user_id: The user id (the account id with instance-level tracking).
        group_id: The top-level group (account) the user belongs to, if known.
        traits: The user's traits.
        timestamp: When the action happened (UTC).
        message_id: Stable id for de-duplication.
    """

    type: ClassVar[Literal["identify"]] = "identify"
    user_id: str
    group_id: str | None
    traits: Mapping[str, Any]
    timestamp: _dt.datetime
    message_id: str = field(default_factory=new_message_id)

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON-compatible data, in the common ``userId``/``traits`` form."""
        return _strip(
            {
                "type": self.type,
                "messageId": self.message_id,
                "userId": self.user_id,
                "groupId": self.group_id,
                "traits": to_json_compatible(dict(self.traits)),
                "timestamp": _iso(self.timestamp),
            }
        )


@dataclass(frozen=True)
class GroupMessage:
    """A group at one level: ``group(groupId, traits)`` with ``group_type`` and parent traits.

    Attributes:
        group_id: The group's id.
        group_type: The hierarchy level, e.g. ``"workspace"``; also in ``traits``.
        parent_group_id: The id of the group one level up (``None`` at the top); also in
            ``traits`` when set.
        user_id: The user the call is made for.
        traits: The group's traits, including ``name``, ``group_type`` and ``parent_group_id``.
        timestamp: When the action happened (UTC).
        message_id: Stable id for de-duplication.
    """

    type: ClassVar[Literal["group"]] = "group"
    group_id: str
    group_type: str
    parent_group_id: str | None
    user_id: str | None
    traits: Mapping[str, Any]
    timestamp: _dt.datetime
    message_id: str = field(default_factory=new_message_id)

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON-compatible data."""
        return _strip(
            {
                "type": self.type,
                "messageId": self.message_id,
                "groupId": self.group_id,
                "userId": self.user_id,
                "traits": to_json_compatible(dict(self.traits)),
                "timestamp": _iso(self.timestamp),
            }
        )


@dataclass(frozen=True)
class TrackMessage:
    """One tracked event: ``track(userId, event)`` with the group of the event's level.

    Attributes:
        user_id: The user id (the account id with instance-level tracking).
        event: The event name from the plan.
        group_id: The group id of the event's level, or ``None`` when the context lacked it.
        group_type: The event's group level.
        category: The event's category in the plan.
        properties: Event properties (sent only by providers that accept them).
        timestamp: When the action happened (UTC).
        context: Extra context, e.g. trace ids; ``groupId`` is added when sent.
        message_id: Stable id for de-duplication.
        groups: The group id of each bound level from the top of the hierarchy down to the
            event's level (``{"account": "acc_1", "workspace": "ws_1"}``), for destinations
            that take every level on the event (PostHog, Mixpanel, Amplitude).
    """

    type: ClassVar[Literal["track"]] = "track"
    user_id: str
    event: str
    group_id: str | None
    group_type: str
    category: str
    properties: Mapping[str, Any]
    timestamp: _dt.datetime
    context: Mapping[str, Any] = field(default_factory=dict)
    message_id: str = field(default_factory=new_message_id)
    groups: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON-compatible data, the group in ``context.groupId``."""
        context = to_json_compatible(dict(self.context))
        if self.group_id is not None:
            context["groupId"] = self.group_id
        return _strip(
            {
                "type": self.type,
                "messageId": self.message_id,
                "userId": self.user_id,
                "event": self.event,
                "properties": to_json_compatible(dict(self.properties)),
                "context": context,
                "timestamp": _iso(self.timestamp),
            }
        )


#: Any message an emission produces.
Message = Union[IdentifyMessage, GroupMessage, TrackMessage]


_warned_types: set[str] = set()
_PLAIN = frozenset({str, bool, type(None)})  # kept as they are (ints and floats are checked)
_int_limit: Callable[[], int] = getattr(sys, "get_int_max_str_digits", lambda: 0)  # 3.10.7+
#: ``(digit limit, low, high)`` as :func:`_checked_int` last read them; until then no int is
#: between low and high, so the first one takes the slow path, which reads the limit.
_int_bounds: tuple[int, float, float] = (-1, 0, 0)


def _checked_int(value: int) -> int | str:
    """``value``, or ``"<int of N digits>"`` if it has more digits than JSON text may hold."""
    global _int_bounds
    limit = _int_limit()  # read each time: sys.set_int_max_str_digits() may change it
    if limit != _int_bounds[0]:
        high = 10**limit if limit > 0 else math.inf
        _int_bounds = (limit, -high, high)
    if _int_bounds[1] < value < _int_bounds[2]:
        return value
    bits = value.bit_length()
    guess = int(bits * 0.30102999566398120)  # the digits are this or one more
    digits = f"about {guess + 1}" if bits > 200_000 else str(guess + (abs(value) >= 10**guess))
    if "builtins.int" not in _warned_types:
        _warned_types.add("builtins.int")
        _log.warning(
            "instrumentor: an int of %s digits is longer than Python turns into text; it is "
            'sent as "<int of N digits>". Send such numbers as strings (logged once)',
            digits,
        )
    return f"<int of {digits} digits>"


def _fallback(value: object) -> str:
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not lose the message
        text = f"<unprintable {type(value).__name__}>"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if kind not in _warned_types and len(_warned_types) < 1000:
        _warned_types.add(kind)
        _log.warning(
            "instrumentor: %s is not JSON data; it is sent as its str(). Convert it before "
            "tracking to choose the form (logged once per type)",
            kind,
        )
    return text


def to_json_compatible(value: Any) -> Any:
    """Turn any value into data ``json.dumps`` accepts, never raising.

    Datetimes and dates become ISO 8601 strings (naive datetimes are taken as UTC), UUIDs and
    Decimals strings, Enums their value, bytes UTF-8 text (or hex), sets and tuples lists,
    dataclasses dicts; NaN and infinities become ``None``, ints too long for text (see
    ``sys.get_int_max_str_digits()``) ``"<int of N digits>"``; non-string keys become strings;
    cycles and nesting deeper than 32 become ``"<cycle>"`` / ``"<too deep>"``; anything else
    its ``str()``.
    """
    if type(value) is dict:  # the common case: a flat dict of plain values, copied as is
        _, low, high = _int_bounds
        try:  # a dict another thread changes meanwhile raises: the slow path copies it then
            for key, item in value.items():
                if type(key) is not str:
                    break
                kind = type(item)
                if kind is str or (low < item < high if kind is int else kind in _PLAIN):
                    continue
                if kind is not float or item - item != 0.0:  # NaN and infinities give NaN
                    break
            else:
                return dict(value)
        except Exception:
            pass
    try:
        return _convert(value, 0, frozenset())
    except Exception:  # e.g. an int subclass whose __int__ raises, a broken tzinfo
        return _fallback(value)


def _child(value: Any, depth: int, seen: frozenset[int]) -> Any:
    """Convert one item; a failure replaces that item only, never its container."""
    try:
        return _convert(value, depth, seen)
    except Exception:
        return _fallback(value)


def _convert(value: Any, depth: int, seen: frozenset[int]) -> Any:
    """``value`` as JSON data (see :func:`to_json_compatible`); may raise, the caller catches.

    Plain scalars return at once; other values go to the converter of their exact type, else of
    the first base class that :data:`_BY_BASE` lists (subclasses: an Enum, a custom Mapping).
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is int:
        return _checked_int(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if isinstance(value, (int, str, float)):  # subclasses, IntEnum and str Enums included
        return _plain_scalar(value)
    if depth >= _MAX_DEPTH:
        return "<too deep>"
    convert = _BY_TYPE.get(kind) or _converter_for(value)
    return convert(value, depth, seen)


def _plain_scalar(value: int | str | float) -> Any:
    """An int, str or float subclass as the plain type (non-finite floats as ``None``)."""
    if isinstance(value, int):  # bool: a mock posing as one
        return value if isinstance(value, bool) else _checked_int(int(value))
    if isinstance(value, str):
        return str.__str__(value)
    return float(value) if math.isfinite(value) else None


def _datetime(value: _dt.datetime, depth: int, seen: frozenset[int]) -> str:
    """ISO 8601 to the millisecond; a naive datetime is taken as UTC."""
    return _iso(value if value.tzinfo else value.replace(tzinfo=_UTC))


def _isoformat(value: _dt.date | _dt.time, depth: int, seen: frozenset[int]) -> str:
    """A date or a time in ISO 8601."""
    return value.isoformat()


def _uuid_or_decimal(value: uuid.UUID | decimal.Decimal, depth: int, seen: frozenset[int]) -> Any:
    """A UUID or a Decimal as its string; a NaN or infinite Decimal as ``None``."""
    if isinstance(value, decimal.Decimal) and not value.is_finite():
        return None
    return str(value)


def _enum(value: enum.Enum, depth: int, seen: frozenset[int]) -> Any:
    """An Enum member as its value, converted."""
    return _convert(value.value, depth + 1, seen)


def _bytes(value: bytes | bytearray | memoryview, depth: int, seen: frozenset[int]) -> str:
    """Bytes as UTF-8 text, or as hex when they are not UTF-8."""
    raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()


def _mapping(value: Mapping[Any, Any], depth: int, seen: frozenset[int]) -> Any:
    """A mapping as a dict with string keys; a cycle back to it as ``"<cycle>"``."""
    if id(value) in seen:
        return "<cycle>"
    seen = seen | {id(value)}
    try:
        items = list(value.items())
    except Exception:
        return _fallback(value)
    out: dict[str, Any] = {}
    for key, item in items:
        k = key if isinstance(key, str) else str(_child(key, depth + 1, seen))
        out[k] = _child(item, depth + 1, seen)
    return out


def _sequence(value: Any, depth: int, seen: frozenset[int]) -> Any:
    """A list, tuple or set as a list (a set sorted by ``repr``); a cycle as ``"<cycle>"``."""
    if id(value) in seen:
        return "<cycle>"
    seen = seen | {id(value)}
    try:
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
    except Exception:
        items = list(value)
    return [_child(item, depth + 1, seen) for item in items]


def _dataclass(value: Any, depth: int, seen: frozenset[int]) -> Any:
    """A dataclass instance as the dict of its fields; a cycle as ``"<cycle>"``."""
    if id(value) in seen:
        return "<cycle>"
    seen = seen | {id(value)}
    try:
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    except Exception:
        return _fallback(value)
    return _convert(fields, depth + 1, seen)


def _other(value: object, depth: int, seen: frozenset[int]) -> str:
    """Anything else: its ``str()``, with a warning once per type."""
    return _fallback(value)


_Converter = Callable[[Any, int, frozenset[int]], Any]
#: Converters by base class, in the order they are tried (a datetime is a date, too).
_BY_BASE: tuple[tuple[type | tuple[type, ...], _Converter], ...] = (
    (_dt.datetime, _datetime),
    ((_dt.date, _dt.time), _isoformat),
    ((uuid.UUID, decimal.Decimal), _uuid_or_decimal),
    (enum.Enum, _enum),
    ((bytes, bytearray, memoryview), _bytes),
    (Mapping, _mapping),
    ((list, tuple, set, frozenset), _sequence),
)
#: The same converters by exact type, for the common types: one dict lookup.
_BY_TYPE: dict[type, _Converter] = {
    _dt.datetime: _datetime,
    _dt.date: _isoformat,
    _dt.time: _isoformat,
    uuid.UUID: _uuid_or_decimal,
    decimal.Decimal: _uuid_or_decimal,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    dict: _mapping,
    list: _sequence,
    tuple: _sequence,
    set: _sequence,
    frozenset: _sequence,
}


def _converter_for(value: object) -> _Converter:
    """The converter of a value whose exact type :data:`_BY_TYPE` does not list."""
    for kinds, convert in _BY_BASE:
        if isinstance(value, kinds):
            return convert
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dataclass
    return _other


# --- a lossless JSON form, for queues that carry messages between processes -------------------

_MESSAGE_TYPES: dict[str, type[IdentifyMessage] | type[GroupMessage] | type[TrackMessage]] = {
    "identify": IdentifyMessage,
    "group": GroupMessage,
    "track": TrackMessage,
}
_MAPPING_FIELDS = frozenset({"traits", "properties", "context", "groups"})
#: Fields added after rows were first written: an older row without them gets the default.
_ADDED_LATER = frozenset({"groups"})


def message_to_data(message: Message) -> dict[str, Any]:
    """Every field of ``message`` as JSON data, for :func:`message_from_data` to rebuild.

    Unlike ``to_dict()`` (the provider's form) nothing is left out: the message id, the group
    level and category of a track, and the timestamp to the microsecond survive the trip.
    """
    data: dict[str, Any] = {"type": message.type}
    for item in dataclasses.fields(message):
        value = getattr(message, item.name)
        if item.name == "timestamp":
            aware = value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
            data["timestamp"] = aware.isoformat()
        elif item.name in _MAPPING_FIELDS:
            data[item.name] = to_json_compatible(dict(value))
        else:
            data[item.name] = value
    return data


def message_from_data(data: Mapping[str, Any]) -> Message:
    """Rebuild a message from :func:`message_to_data`'s form, keeping its ``message_id``.

    Raises:
        ValueError: If ``data`` is not such a form (unknown type, missing or ill-typed field).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a message must be a JSON object, got {type(data).__name__}")
    kind = _MESSAGE_TYPES.get(data.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise ValueError(f"unknown message type {data.get('type')!r}")
    values: dict[str, Any] = {}
    for item in dataclasses.fields(kind):
        if item.name not in data:
            if item.name in _ADDED_LATER:
                continue
            raise ValueError(f"a {kind.type} message needs {item.name!r}")
        value = data[item.name]
        if item.name == "timestamp":
            try:
                value = _dt.datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise ValueError(f"timestamp {value!r} is not an ISO 8601 time") from None
            if value.tzinfo is None:
                value = value.replace(tzinfo=_UTC)
        elif item.name in _MAPPING_FIELDS:
            if not isinstance(value, Mapping):
                raise ValueError(f"{item.name!r} must be a JSON object")
            value = dict(value)
        elif value is None:
            if "None" not in str(item.type):  # the annotation, e.g. "str | None"
                raise ValueError(f"{item.name!r} must not be null in a {kind.type} message")
        elif not isinstance(value, str):
            raise ValueError(f"{item.name!r} must be a string, got {type(value).__name__}")
        values[item.name] = value
    return kind(**values)
