"""One tracked action, and the identify, group and track messages it becomes on first use.

On the caller's thread an emission is one small object. Message objects, ids, datetimes and JSON
are made later, when a receiver first asks for :attr:`Emission.messages` (a delivery worker, or
the memory and console transports).
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from instrumentor._bundle import NO_BUNDLE, Bundle, parent_id
from instrumentor._context import AnalyticsContext, Group
from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor._registry import DEFAULT_HIERARCHY, EventRegistry, GroupHierarchy

__all__ = ["Emission", "group_message", "identify_message"]

_UTC = _dt.timezone.utc
_EMPTY: Mapping[str, Any] = {}
_expand_lock = threading.Lock()


class Emission(tuple):  # type: ignore[type-arg]
    """One tracked action, as sent on :data:`~instrumentor.signals.event_emitted`.

    An immutable record (a tuple of the eight fields below, in that order, so that the emitter
    makes one on the caller's thread with ``tuple.__new__(Emission, fields)``, no Python call);
    it compares and hashes by identity. Build one with
    ``Emission(event, user_id, group_id, timestamp, context, properties, bundle, messages=None,
    *, trace=None)``; ``messages`` given are used as they are (bare identify and group calls).

    Attributes:
        event: The plan member tracked (``None`` for a bare identify or group call).
        user_id: The user id sent (the account id with instance-level tracking).
        group_id: The group id of the event's level, or ``None`` if it was missing.
        timestamp: Seconds since the epoch when the action completed.
        context: The analytics context at that moment.
        properties: Event properties, or ``None``.
        bundle: Whether an identify goes with this track, and the levels whose group calls do.
        trace: ``(trace id, span id)`` of the span recording when it was tracked, or ``None``.
    """

    def __new__(
        cls,
        event: EventRegistry | None,
        user_id: str | None,
        group_id: str | None,
        timestamp: float,
        context: AnalyticsContext,
        properties: Mapping[str, Any] | None,
        bundle: Bundle,
        messages: tuple[Message, ...] | None = None,
        *,
        trace: tuple[str, str] | None = None,
    ) -> Emission:
        fields = (event, user_id, group_id, timestamp, context, properties, bundle, trace)
        return _rebuild(fields, messages, cls)

    event: EventRegistry | None = property(itemgetter(0))  # type: ignore[assignment]
    user_id: str | None = property(itemgetter(1))  # type: ignore[assignment]
    group_id: str | None = property(itemgetter(2))  # type: ignore[assignment]
    timestamp: float = property(itemgetter(3))  # type: ignore[assignment]
    context: AnalyticsContext = property(itemgetter(4))  # type: ignore[assignment]
    properties: Mapping[str, Any] | None = property(itemgetter(5))  # type: ignore[assignment]
    bundle: Bundle = property(itemgetter(6))  # type: ignore[assignment]
    trace: tuple[str, str] | None = property(itemgetter(7))  # type: ignore[assignment]

    __eq__ = object.__eq__  # an emission is an event that happened once: identity
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    @property
    def group_level(self) -> str:
        """The event's group level (for a bare identify or group call, the level it concerns)."""
        event = self.event
        return event.routing.level if event is not None else self.bundle[1][0]

    @property
    def messages(self) -> tuple[Message, ...]:
        """The identify, group and track messages of this emission, built once on first use."""
        cache = self.__dict__
        messages: tuple[Message, ...] | None = cache.get("messages")
        if messages is None:
            with _expand_lock:
                messages = cache.get("messages")
                if messages is None:
                    messages = cache["messages"] = _expand(self)
        return messages

    def built_messages(self) -> tuple[Message, ...] | None:
        """The messages if they were built already, else ``None`` (never builds them)."""
        built: tuple[Message, ...] | None = self.__dict__.get("messages")
        return built

    def __repr__(self) -> str:
        event = self.event
        name = event.routing.name if event is not None else "-"
        return f"<Emission {name} user={self.user_id!r} group={self.group_id!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies and pickles keep the messages already built (and so their message ids).
        return (_rebuild, (tuple(self), self.__dict__.get("messages"), type(self)))


def _rebuild(
    fields: tuple[Any, ...], messages: tuple[Message, ...] | None, cls: type[Emission] = Emission
) -> Emission:
    """An emission of ``fields``, with ``messages`` already built if given."""
    emission: Emission = tuple.__new__(cls, fields)
    if messages is not None:
        emission.__dict__["messages"] = messages
    return emission


def group_message(
    ctx: AnalyticsContext,
    hierarchy: GroupHierarchy,
    level: str,
    group: Group,
    user_id: str | None,
    when: _dt.datetime,
) -> GroupMessage:
    """The group call for ``group`` at ``level``, with ``group_type`` and ``parent_group_id``."""
    parent = parent_id(ctx, hierarchy, level)
    traits: dict[str, Any] = dict(group.traits)
    if group.name is not None:
        traits["name"] = group.name
    traits["group_type"] = level
    if parent is not None:
        traits["parent_group_id"] = parent
    return GroupMessage(group.id, level, parent, user_id, traits, when)


def identify_message(
    ctx: AnalyticsContext,
    hierarchy: GroupHierarchy,
    user_id: str,
    when: _dt.datetime,
    top_id: str | None = None,
) -> IdentifyMessage:
    """The identify of ``user_id``, with the account (the top level) as its group."""
    top = ctx.groups.get(hierarchy.top)
    if top_id is not None and (top is None or top.id != top_id):
        top = Group(top_id)  # the event named its account itself (e.g. at sign-up)
    if top is not None and user_id == top.id and ctx.user_id != user_id:
        # Instance-level tracking: the "user" is the account; describe it as such.
        traits: dict[str, Any] = dict(top.traits)
        if top.name is not None:
            traits.setdefault("name", top.name)
    else:
        traits = dict(ctx.user_traits)
    return IdentifyMessage(user_id, top.id if top is not None else None, traits, when)


def _properties_of(emission: Emission) -> dict[str, Any]:
    """A copy of the emission's properties; none if they cannot be read (the rest still goes)."""
    properties = emission.properties
    if type(properties) is dict:  # what the emitter always makes
        return dict(properties)
    try:
        return dict(properties or _EMPTY)
    except Exception:  # an emission built elsewhere, with a mapping that cannot be read
        return {}


def _expand(emission: Emission) -> tuple[Message, ...]:
    ctx = emission.context
    event = emission.event
    hierarchy = type(event).hierarchy if event is not None else DEFAULT_HIERARCHY
    when = _dt.datetime.fromtimestamp(emission.timestamp, _UTC)
    out: list[Message] = []
    identify, group_levels = emission.bundle if event is not None else NO_BUNDLE
    if identify and emission.user_id is not None:
        top_id = emission.group_id if emission.group_level == hierarchy.top else None
        out.append(identify_message(ctx, hierarchy, emission.user_id, when, top_id))
    for level in group_levels:
        group = ctx.groups.get(level)
        gid = emission.group_id
        if level == emission.group_level and gid is not None and (group is None or group.id != gid):
            group = Group(gid)
        if group is not None:
            out.append(group_message(ctx, hierarchy, level, group, emission.user_id, when))
    if event is not None and emission.user_id is not None:
        spec = event.routing.spec
        trace = emission.trace
        out.append(
            TrackMessage(
                user_id=emission.user_id,
                event=spec.name,
                group_id=emission.group_id,
                group_type=emission.group_level,
                category=spec.category,
                properties=_properties_of(emission),
                timestamp=when,
                context={"traceId": trace[0], "spanId": trace[1]} if trace is not None else {},
                groups=_path_groups(ctx, hierarchy, emission.group_level, emission.group_id),
            )
        )
    return tuple(out)


def _path_groups(
    ctx: AnalyticsContext, hierarchy: GroupHierarchy, level: str, group_id: str | None
) -> dict[str, str]:
    """The bound group id of each level from the top down to ``level`` (the event's own id last)."""
    groups = {
        upper: ctx.group_ids[upper]
        for upper in hierarchy.path_to(level)[:-1]
        if upper in ctx.group_ids
    }
    if group_id is not None:
        groups[level] = group_id
    return groups


def _after_fork_in_child() -> None:
    # A delivery thread of the parent may have held the lock at fork time (it builds messages
    # as it delivers): in the child that thread is gone and the lock would stay held for ever.
    global _expand_lock
    _expand_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
