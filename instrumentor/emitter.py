"""Emission: turn "this event happened" into one bundled :class:`Emission` and send it.

On the caller's thread an emission costs a context read, a clock read, one dictionary look-up to
decide whether identify and group calls are due, one small object and one signal send. Message
objects, ids, datetimes and JSON are made later, when a receiver first asks for
:attr:`Emission.messages` (a delivery worker, or the memory and console transports).

Bundling: each track is preceded by an identify of its user and a group call for each level from
the top of the hierarchy down to the event's level (with ``group_type`` and
``parent_group_id``), unless an identical call was made in this process within ``bundle_ttl``
seconds.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

from opentelemetry import trace as _otel_trace

from instrumentor import config as _config
from instrumentor.context import AnalyticsContext, Group, _current
from instrumentor.diagnostics import Incident
from instrumentor.exceptions import MissingContextError, TrackingUsageError
from instrumentor.messages import (
    GroupMessage,
    IdentifyMessage,
    Message,
    TrackMessage,
    to_json_compatible,
)
from instrumentor.otel import span_event
from instrumentor.registry import DEFAULT_HIERARCHY, EventRegistry, GroupHierarchy, plan_hierarchy
from instrumentor.signals import event_emitted

if TYPE_CHECKING:
    from instrumentor.config import Runtime

__all__ = [
    "Emission",
    "PropertiesArg",
    "establish_group_hierarchy",
    "group",
    "identify",
    "track",
]

_log = logging.getLogger("instrumentor")
_UTC = _dt.timezone.utc
_EMPTY: Mapping[str, Any] = {}
_MAX_SEEN = 50_000
_NO_BUNDLE: tuple[bool, tuple[str, ...]] = (False, ())
#: The only errors raised into callers at run time, and only in strict mode.
STRICT_ERRORS = (MissingContextError, TrackingUsageError)
_expand_lock = threading.Lock()
_now = time.time
_get_context = _current.get

#: Event properties: a mapping of JSON-compatible values (normalised when sent).
PropertiesArg = Union[Mapping[str, Any], None]


class Emission:
    """One tracked action, as sent on :data:`~instrumentor.signals.event_emitted`.

    Attributes:
        event: The plan member tracked (``None`` for a bare identify or group call).
        user_id: The user id sent (the account id with instance-level tracking).
        group_id: The group id of the event's level, or ``None`` if it was missing.
        group_level: The event's level.
        timestamp: Seconds since the epoch when the action completed.
        context: The analytics context at that moment.
        properties: Event properties, or ``None``.
    """

    __slots__ = (
        "_bundle",
        "_messages",
        "_trace",
        "context",
        "event",
        "group_id",
        "properties",
        "timestamp",
        "user_id",
    )

    def __init__(
        self,
        event: EventRegistry | None,
        user_id: str | None,
        group_id: str | None,
        timestamp: float,
        context: AnalyticsContext,
        properties: Mapping[str, Any] | None,
        bundle: tuple[bool, tuple[str, ...]],
        messages: tuple[Message, ...] | None = None,
    ) -> None:
        self.event = event
        self.user_id = user_id
        self.group_id = group_id
        self.timestamp = timestamp
        self.context = context
        self.properties = properties
        self._bundle = bundle
        self._messages = messages
        self._trace: tuple[str, str] | None = None  # (trace id, span id) when a span recorded

    @property
    def group_level(self) -> str:
        """The event's group level (for a bare identify or group call, the level it concerns)."""
        return self.event._level if self.event is not None else self._bundle[1][0]

    @property
    def messages(self) -> tuple[Message, ...]:
        """The identify, group and track messages of this emission, built once on first use."""
        messages = self._messages
        if messages is None:
            with _expand_lock:
                messages = self._messages
                if messages is None:
                    messages = self._messages = _expand(self)
        return messages

    def __repr__(self) -> str:
        name = self.event._value_.name if self.event is not None else "-"
        return f"<Emission {name} user={self.user_id!r} group={self.group_id!r}>"


def _hierarchy_of(event: EventRegistry | None) -> GroupHierarchy:
    return type(event).hierarchy if event is not None else DEFAULT_HIERARCHY


def _parent_id(ctx: AnalyticsContext, hierarchy: GroupHierarchy, level: str) -> str | None:
    for upper in reversed(hierarchy.levels[: hierarchy.index(level)]):
        gid = ctx.group_id(upper)
        if gid is not None:
            return gid
    return None


def _group_message(
    ctx: AnalyticsContext,
    hierarchy: GroupHierarchy,
    level: str,
    group: Group,
    user_id: str | None,
    when: _dt.datetime,
) -> GroupMessage:
    parent = _parent_id(ctx, hierarchy, level)
    traits: dict[str, Any] = dict(group.traits)
    if group.name is not None:
        traits["name"] = group.name
    traits["group_type"] = level
    if parent is not None:
        traits["parent_group_id"] = parent
    return GroupMessage(group.id, level, parent, user_id, traits, when)


def _identify_message(
    ctx: AnalyticsContext,
    hierarchy: GroupHierarchy,
    user_id: str,
    when: _dt.datetime,
    top_id: str | None = None,
) -> IdentifyMessage:
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


def _expand(emission: Emission) -> tuple[Message, ...]:
    ctx = emission.context
    event = emission.event
    hierarchy = _hierarchy_of(event)
    when = _dt.datetime.fromtimestamp(emission.timestamp, _UTC)
    out: list[Message] = []
    identify, group_levels = emission._bundle if event is not None else _NO_BUNDLE
    if identify and emission.user_id is not None:
        top_id = emission.group_id if emission.group_level == hierarchy.top else None
        out.append(_identify_message(ctx, hierarchy, emission.user_id, when, top_id))
    for level in group_levels:
        group = ctx.groups.get(level)
        gid = emission.group_id
        if level == emission.group_level and gid is not None and (group is None or group.id != gid):
            group = Group(gid)
        if group is not None:
            out.append(_group_message(ctx, hierarchy, level, group, emission.user_id, when))
    if event is not None and emission.user_id is not None:
        spec = event._value_
        out.append(
            TrackMessage(
                user_id=emission.user_id,
                event=spec.name,
                group_id=emission.group_id,
                group_type=emission.group_level,
                category=spec.category,
                properties=dict(emission.properties or _EMPTY),
                timestamp=when,
                context=(
                    {"traceId": emission._trace[0], "spanId": emission._trace[1]}
                    if emission._trace is not None
                    else {}
                ),
            )
        )
    return tuple(out)


# --- bundle de-duplication ------------------------------------------------------------------


_unique = itertools.count(1)


def _fingerprint(*parts: Any) -> Any:
    """A value equal for equal traits. Traits are JSON snapshots, so their repr is faithful."""
    try:
        return hash(repr(parts))
    except Exception:  # unrepresentable: a value never seen before, so always re-sent
        return ("unique", next(_unique))


def _remember(rt: Runtime, key: Any, expiry: float, now: float) -> None:
    """Record a sent identify/group (or bundle) in the bounded process-wide record."""
    seen = rt.seen
    if len(seen) >= _MAX_SEEN:
        live = {k: v for k, v in seen.items() if v > now}
        seen.clear()
        if len(live) < _MAX_SEEN // 2:
            seen.update(live)
    seen[key] = expiry


def _identify_key(
    ctx: AnalyticsContext, hierarchy: GroupHierarchy, user_id: str
) -> tuple[Any, ...]:
    top = ctx.groups.get(hierarchy.top)
    traits = top if user_id != ctx.user_id and top is not None else ctx.user_traits
    return ("identify", user_id, top.id if top else None, _fingerprint(traits))


def _group_key(
    ctx: AnalyticsContext, hierarchy: GroupHierarchy, level: str, group: Group, user_id: str | None
) -> tuple[Any, ...]:
    # The user is part of the key: a group call also links its user to the group, so every
    # user of a workspace gets its own (once per bundle_ttl), not only the first one.
    parent = _parent_id(ctx, hierarchy, level)
    return ("group", level, group.id, parent, user_id, _fingerprint(group.name, group.traits))


def _due_calls(
    rt: Runtime,
    ctx: AnalyticsContext,
    hierarchy: GroupHierarchy,
    user_id: str,
    level: str,
    group_id: str | None,
    now: float,
) -> tuple[bool, tuple[str, ...]]:
    """Which identify/group calls the bundle needs: the slow path, once per key and TTL."""
    seen = rt.seen
    expiry = now + rt.bundle_ttl
    always = rt.bundle_ttl <= 0
    key = _identify_key(ctx, hierarchy, user_id)
    identify = always or seen.get(key, 0.0) <= now
    if identify and not always:
        _remember(rt, key, expiry, now)
    levels: list[str] = []
    for upper in hierarchy.path_to(level):
        group = ctx.groups.get(upper)
        if upper == level and group_id is not None and (group is None or group.id != group_id):
            group = Group(group_id)
        if group is None:
            continue
        gkey = _group_key(ctx, hierarchy, upper, group, user_id)
        if always or seen.get(gkey, 0.0) <= now:
            levels.append(upper)
            if not always:
                _remember(rt, gkey, expiry, now)
    return identify, tuple(levels)


def _report(
    rt: Runtime, kind: str, message: str, event: EventRegistry | None, site: str | None
) -> None:
    rt.report(Incident(kind, message, event=event._value_.name if event else None, site=site))


def emit_track(
    event: EventRegistry,
    group_id: str | None,
    properties: Mapping[str, Any] | None,
    site: str | None,
) -> None:
    """Emit one track of ``event`` with the current context (used by ``@tracks`` and ``track``).

    This is the caller's whole cost, so it is written for speed: plain attribute and dict reads,
    one clock read, one small object, one signal dispatch.

    Raises:
        MissingContextError: Only in strict mode, when the user or the group is missing.
    """
    rt = _config._runtime or _config.runtime()
    if not rt.enabled or not (event_emitted.receivers or rt.strict) or event_emitted.is_muted:
        return
    ctx = _get_context()
    level = event._level
    ids = ctx._ids
    explicit = group_id is not None
    if rt.instance_level:
        # The account is the user; an event at the top level may name its account itself.
        user_id = group_id if explicit and event._top_level else ids.get(event._top)
    else:
        user_id = ctx.user_id
    if user_id is None:
        _missing(rt, "missing_user", event, site)
        return
    if not explicit:
        group_id = ids.get(level)
        if group_id is None:
            _missing(rt, "missing_group", event, site)
    if event._deprecated:
        _deprecated(rt, event, site)
    if properties is not None:
        properties = _snapshot_properties(rt, properties, event, site)
    now = _now()
    # The last bundle verdict is cached on the (immutable, per-request) context: while it is
    # fresh for this runtime and hierarchy path, identify and group calls are not due and
    # nothing is hashed. Explicit group ids are decided on the slow path (they are unbounded).
    verdict = None if explicit else ctx._cache[1]
    if (
        verdict is not None
        and verdict[1] is rt
        and verdict[2] > now
        and verdict[0] == event._bundle_key
    ):
        bundle = _NO_BUNDLE
    else:
        bundle = _bundle_for(rt, ctx, event, user_id, group_id, now, explicit)
    emission = Emission(event, user_id, group_id, now, ctx, properties, bundle)
    if _otel_trace._TRACER_PROVIDER is not None and rt.span_events:  # an SDK is installed
        emission._trace = span_event(event, group_id, user_id, rt.span_event_user)
    signal = event_emitted
    sender = type(event)
    strong, weak = signal._cache.get(sender) or signal._entries_for(sender)
    if weak:
        signal.dispatch(sender, emission)
        return
    for receiver in strong:
        try:
            receiver(sender, emission=emission)
        except Exception as exc:
            signal._receiver_failed(receiver, exc)


def _bundle_for(
    rt: Runtime,
    ctx: AnalyticsContext,
    event: EventRegistry,
    user_id: str,
    group_id: str | None,
    now: float,
    explicit: bool,
) -> tuple[bool, tuple[str, ...]]:
    """The calls due with this track, decided against the process-wide record (slow path)."""
    cache = ctx._cache
    fingerprint = cache[0]
    if fingerprint is None:
        fingerprint = cache[0] = _fingerprint(ctx.user_traits, ctx.groups)
    fast = (fingerprint, event._bundle_key, user_id, group_id)
    if rt.seen.get(fast, 0.0) > now:
        bundle = _NO_BUNDLE
        expiry = rt.seen[fast]
    else:
        hierarchy = type(event).hierarchy
        bundle = _due_calls(rt, ctx, hierarchy, user_id, event._level, group_id, now)
        expiry = now + rt.bundle_ttl
        if rt.bundle_ttl > 0:
            _remember(rt, fast, expiry, now)
    if rt.bundle_ttl > 0 and not explicit:
        cache[1] = (event._bundle_key, rt, expiry)
    return bundle


def _snapshot_properties(
    rt: Runtime, properties: Any, event: EventRegistry, site: str | None
) -> Mapping[str, Any] | None:
    """Properties as JSON data, taken now; anything but a mapping is reported and dropped."""
    if isinstance(properties, Mapping):
        snapshot: dict[str, Any] = to_json_compatible(properties)
        return snapshot
    site = site or _caller_site()
    message = (
        f"{event._value_.name} tracked at {site} with properties of type "
        f"{type(properties).__qualname__}; properties must be a mapping. The event is sent "
        "without them"
    )
    rt.report(Incident("invalid_properties", message, event=event._value_.name, site=site))
    if rt.strict:
        raise TrackingUsageError(message)
    return None


def _missing(rt: Runtime, kind: str, event: EventRegistry, site: str | None) -> None:
    site = site or _caller_site()
    name = event._value_.name
    if kind == "missing_user":
        what = (
            f"no {type(event).hierarchy.top} id bound (instance-level tracking sends it as the "
            "user id)"
            if rt.instance_level
            else "no user id bound"
        )
        message = (
            f"{name} tracked at {site} with {what}; the event is dropped. Bind the identity "
            "per request with bind_context(...) or the framework middleware"
        )
    else:
        level = event._value_.group_level
        message = (
            f"{name} tracked at {site} without a {level} id: it is sent without a group. Bind "
            f"{level}_id in the context, or pass group_id= to @tracks or track()"
        )
    _report(rt, kind, message, event, site)
    if rt.strict:
        raise MissingContextError(f"{message} (strict mode)")


def _deprecated(rt: Runtime, event: EventRegistry, site: str | None) -> None:
    site = site or _caller_site()
    spec = event._value_
    instead = f"; use {spec.replaced_by}" if spec.replaced_by else ""
    rt.report(
        Incident(
            "deprecated_event",
            f"{spec.name} (tracked at {site}) is deprecated: {spec.deprecated}{instead}",
            event=spec.name,
            site=site,
        ),
        key=spec.name,  # warn once per event (per interval), wherever it is tracked
    )


def internal_error(exc: Exception, event: EventRegistry | None, site: str) -> None:
    """Report an unexpected exception inside instrumentor; never raises."""
    try:
        rt = _config._runtime or _config.runtime()
        rt.report(
            Incident(
                "internal_error",
                f"tracking failed at {site}: {exc!r}; the caller was not affected",
                event=event._value_.name if event is not None else None,
                site=site,
                error=exc,
            )
        )
    except Exception:  # pragma: no cover - last resort, logging itself failed
        pass


# --- the public imperative API --------------------------------------------------------------


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_site() -> str:
    """file:line of the nearest frame outside instrumentor (only computed when reporting)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        _PACKAGE_DIR + os.sep
    ):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def track(
    event: EventRegistry,
    *,
    group_id: str | int | None = None,
    properties: PropertiesArg = None,
) -> None:
    """Track ``event`` now, where a decorator does not fit.

    Never raises into the caller, except :class:`~instrumentor.MissingContextError` (and
    :class:`~instrumentor.TrackingUsageError` for a non-plan event) in strict mode.

    Args:
        event: A member of an :class:`~instrumentor.EventRegistry`.
        group_id: The id of the event's group level, when the context does not hold it.
        properties: Event properties, for providers that accept them.
    """
    try:
        given: object = event  # typed callers cannot get here; untyped ones can
        if not isinstance(given, EventRegistry):
            report_problem(
                "invalid_event",
                f"track() takes a member of an EventRegistry, got {event!r}; define the event "
                "in the plan and pass Events.X",
                TrackingUsageError,
            )
            return
        emit_track(event, str(group_id) if group_id is not None else None, properties, None)
    except STRICT_ERRORS:
        raise
    except Exception as exc:
        internal_error(exc, event if isinstance(event, EventRegistry) else None, "track()")


def _send_messages(ctx: AnalyticsContext, level: str, messages: tuple[Message, ...]) -> None:
    if messages:
        emission = Emission(
            None, ctx.user_id, None, time.time(), ctx, None, (False, (level,)), messages
        )
        event_emitted.dispatch(None, emission)


def report_problem(
    kind: str,
    message: str,
    error_type: type[Exception],
    *,
    event: EventRegistry | None = None,
    site: str | None = None,
    error: BaseException | None = None,
) -> None:
    """Report a usage problem found at run time; raise ``error_type`` only in strict mode."""
    rt = _config._runtime or _config.runtime()
    name = event._value_.name if event is not None else None
    rt.report(Incident(kind, message, event=name, site=site or _caller_site(), error=error))
    if rt.strict:
        raise error_type(message) from error


def _active_runtime() -> Runtime | None:
    rt = _config._runtime or _config.runtime()
    return rt if rt.enabled and (event_emitted.receivers or rt.strict) else None


def identify(
    traits: Mapping[str, Any] | None = None, *, hierarchy: GroupHierarchy | None = None
) -> None:
    """Send an identify for the bound user now, with the top-level group (account) as its group.

    Args:
        traits: Traits to send, merged over the context's user traits.
        hierarchy: The hierarchy whose top level is the account; by default the plan's (see
            :func:`~instrumentor.registry.plan_hierarchy`).
    """
    try:
        rt = _active_runtime()
        if rt is None:
            return
        hierarchy = hierarchy or plan_hierarchy()
        ctx = _current.get()
        user_id = ctx.group_id(hierarchy.top) if rt.instance_level else ctx.user_id
        if user_id is None:
            report_problem(
                "missing_user",
                "identify() called with no user bound; nothing sent",
                MissingContextError,
            )
            return
        when = _dt.datetime.now(_UTC)
        message = _identify_message(ctx, hierarchy, user_id, when)
        if traits:
            message = IdentifyMessage(
                message.user_id, message.group_id, {**message.traits, **traits}, when
            )
        if rt.bundle_ttl > 0:  # what a track would send is covered now
            rt.seen[_identify_key(ctx, hierarchy, user_id)] = time.time() + rt.bundle_ttl
        _send_messages(ctx, hierarchy.top, (message,))
    except STRICT_ERRORS:
        raise
    except Exception as exc:
        internal_error(exc, None, "identify()")


def group(
    level: str | None = None,
    *,
    group_id: str | int | None = None,
    name: str | None = None,
    traits: Mapping[str, Any] | None = None,
    hierarchy: GroupHierarchy | None = None,
) -> None:
    """Send one group call now for ``level`` (``group_type`` and ``parent_group_id`` included).

    Args:
        level: The hierarchy level of the group; by default the top (the account).
        group_id: The group's id; by default the one bound at ``level``.
        name: The group's readable name; by default the bound one.
        traits: Further traits, merged over the bound ones.
        hierarchy: The hierarchy ``level`` belongs to; by default the plan's.
    """
    try:
        rt = _active_runtime()
        if rt is None:
            return
        hierarchy = hierarchy or plan_hierarchy()
        level = level or hierarchy.top
        if level not in hierarchy.levels:
            report_problem(
                "invalid_group_level",
                f"group({level!r}): unknown level; the hierarchy is {' > '.join(hierarchy.levels)}",
                TrackingUsageError,
            )
            return
        ctx = _current.get()
        bound = ctx.groups.get(level)
        gid = str(group_id) if group_id is not None else (bound.id if bound else None)
        if gid is None:
            report_problem(
                "missing_group",
                f"group({level!r}) called with no {level} id bound or given; nothing sent",
                MissingContextError,
            )
            return
        base = bound if bound is not None and bound.id == gid else Group(gid)
        merged = Group(
            gid, name if name is not None else base.name, {**base.traits, **(traits or {})}
        )
        when = _dt.datetime.now(_UTC)
        message = _group_message(ctx, hierarchy, level, merged, ctx.user_id, when)
        _send_messages(ctx, level, (message,))
    except STRICT_ERRORS:
        raise
    except Exception as exc:
        internal_error(exc, None, "group()")


def establish_group_hierarchy(hierarchy: GroupHierarchy | None = None) -> None:
    """Send a group call for every level bound in the context, top first, each with its parent.

    Call it on login or when the user enters a new group; later tracks then skip those calls
    for ``bundle_ttl`` seconds. ``hierarchy`` defaults to the plan's.
    """
    try:
        rt = _active_runtime()
        if rt is None:
            return
        hierarchy = hierarchy or plan_hierarchy()
        ctx = _current.get()
        when = _dt.datetime.now(_UTC)
        messages: list[Message] = []
        expiry = time.time() + rt.bundle_ttl
        for level in hierarchy.levels:
            bound = ctx.groups.get(level)
            if bound is None:
                continue
            messages.append(_group_message(ctx, hierarchy, level, bound, ctx.user_id, when))
            if rt.bundle_ttl > 0:
                rt.seen[_group_key(ctx, hierarchy, level, bound, ctx.user_id)] = expiry
        _send_messages(ctx, hierarchy.top, tuple(messages))
    except Exception as exc:
        internal_error(exc, None, "establish_group_hierarchy()")
