"""Emission: turn "this event happened" into one bundled :class:`Emission` and send it.

On the caller's thread an emission costs a context read, a clock read, one dictionary look-up to
decide whether identify and group calls are due (:mod:`instrumentor._bundle`), one small object
and one signal dispatch. Messages are built later (:mod:`instrumentor._emission`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from instrumentor import _state
from instrumentor._bundle import NO_BUNDLE, BundleState, group_at, last_verdict
from instrumentor._context import AnalyticsContext, context_var
from instrumentor._diagnostics import Incident
from instrumentor._emission import Emission
from instrumentor._messages import to_json_compatible
from instrumentor._otel import sdk_installed, span_event
from instrumentor._registry import (
    EventRegistry,
    PropertiesArg,
    set_tracker,
)
from instrumentor._signals import event_emitted
from instrumentor._state import Runtime
from instrumentor.exceptions import MissingContextError, TrackingUsageError

__all__ = [
    "STRICT_ERRORS",
    "Emission",
    "bundle_state",
    "emit_track",
    "forget_undelivered",
    "internal_error",
    "report_problem",
    "state_of",
    "track",
]

#: The only errors raised into callers at run time, and only in strict mode.
STRICT_ERRORS = (MissingContextError, TrackingUsageError)
_now = time.time
_active = _state.active
_get_context = context_var.get
_dispatch = event_emitted.dispatch  # the signal's one fast path, bound once
_last_verdict = last_verdict.get
_make = tuple.__new__  # an Emission is a tuple: made in one C call (see _emission)


def state_of(rt: Runtime) -> BundleState:
    """The bundle state of ``rt``, made on its first track (each runtime remembers its own)."""
    state: BundleState | None = rt.bundles
    if state is None:
        state = rt.bundles = BundleState(rt.bundle_ttl, rt.identify_links_top)
    return state


def bundle_state() -> BundleState:
    """The bundle state of the installed configuration (what it remembers as sent)."""
    return state_of(_active())


def forget_undelivered(items: Iterable[object]) -> None:
    """Roll the bundle memory back for identify and group calls that will never arrive.

    Destinations call it for what they drop or give up (emissions or messages); the user's next
    track then sends those calls again. Never raises.
    """
    try:
        rt = _state.installed
        state: BundleState | None = rt.bundles if rt is not None else None
        if rt is None or state is None:
            return
        with state.lock:  # a decision in flight sees the rollback, or is seen by it
            _forget(rt, state, items)
    except Exception:  # pragma: no cover - a rollback must never break delivery
        pass


def _forget(rt: Runtime, state: BundleState, items: Iterable[object]) -> None:
    """Forget what ``items`` (emissions or messages) recorded; renew the generation if any."""
    forgotten = False
    for item in items:
        if isinstance(item, Emission):
            built = item.built_messages()
            if built is not None or item.event is None:
                forgotten |= state.forget(built or ())
            else:
                identify, levels = item.bundle
                links = _links_of(item, levels)
                forgotten |= state.forget_calls(item.user_id, identify, links)
        else:
            forgotten |= state.forget((item,))
    if forgotten:
        rt.renew_generation()  # verdicts cached before the rollback are stale


def _links_of(emission: Emission, levels: tuple[str, ...]) -> dict[str, str | None]:
    """The group id of each of ``levels`` that ``emission``'s group calls would have linked."""
    level = emission.group_level
    links: dict[str, str | None] = {}
    for upper in levels:
        group = group_at(emission.context, upper, level, emission.group_id)
        links[upper] = group.id if group is not None else None
    return links


def _report(
    rt: Runtime, kind: str, message: str, event: EventRegistry | None, site: str | None
) -> None:
    rt.report(Incident(kind, message, event=event.routing.name if event else None, site=site))


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
    rt = _state.installed or _active()
    signal = event_emitted
    if not rt.enabled or not (signal.receivers or rt.strict) or signal.is_muted:
        return
    ctx = _get_context()
    _, _, level, top, top_level, deprecated, path_key = event.routing
    ids = ctx.group_ids
    explicit = group_id is not None
    if rt.instance_level:
        # The account is the user; an event at the top level may name its account itself.
        user_id = group_id if explicit and top_level else ids.get(top)
    else:
        user_id = ctx.user_id
    if user_id is None:
        _missing(rt, "missing_user", event, site)
        return
    if not explicit:
        group_id = ids.get(level)
        if group_id is None:
            _missing(rt, "missing_group", event, site)
    if deprecated:
        _deprecated(rt, event, site)
    if properties is not None:
        properties = _snapshot_properties(rt, properties, event, site)
    now = _now()
    # The fresh verdict of this context, runtime and hierarchy path: nothing is due (no hashing).
    verdict = None if explicit else _last_verdict()
    if (
        verdict is not None
        and verdict[0] == ctx.serial
        and verdict[1] == rt.generation
        and verdict[3] > now
        and verdict[2] == path_key
    ):
        trace = span_event(event, group_id, user_id, rt.span_event_user) if verdict[4] else None
        emission = _make(
            Emission, (event, user_id, group_id, now, ctx, properties, NO_BUNDLE, trace)
        )
        _dispatch(type(event), emission)
        return
    _decide_and_emit(rt, ctx, event, user_id, group_id, now, explicit, properties)


def _decide_and_emit(
    rt: Runtime,
    ctx: AnalyticsContext,
    event: EventRegistry,
    user_id: str,
    group_id: str | None,
    now: float,
    explicit: bool,
    properties: Mapping[str, Any] | None,
) -> None:
    """The slow path of :func:`emit_track`: decide the bundle, record it and queue it at once."""
    # Whether to look for a span is decided with the verdict, once per context and
    # configuration (an SDK is installed at start-up, before the requests it traces).
    traced = rt.span_events and sdk_installed()
    trace = span_event(event, group_id, user_id, rt.span_event_user) if traced else None
    state = rt.bundles or state_of(rt)
    with state.lock:  # queued in the order recorded: a user's calls cannot overtake each other
        bundle = state.due(rt, ctx, event, user_id, group_id, now, explicit, traced)
        emission = _make(Emission, (event, user_id, group_id, now, ctx, properties, bundle, trace))
        _dispatch(type(event), emission)


def _snapshot_properties(
    rt: Runtime, properties: Any, event: EventRegistry, site: str | None
) -> Mapping[str, Any] | None:
    """Properties as a dict of JSON data, taken now; anything else is reported and dropped.

    Always a dict or ``None``: properties that are not a mapping, or a mapping that cannot be
    read (its ``items()`` raises), are reported (``invalid_properties``) and the event, with
    its identify and group calls, is sent without them.
    """
    problem, error = "properties must be a mapping", None
    if isinstance(properties, Mapping):
        snapshot = to_json_compatible(properties)  # never raises; a dict unless unreadable
        if type(snapshot) is not dict:
            try:  # once more, to say what failed (or a dict another thread changed meanwhile)
                snapshot = to_json_compatible(dict(properties.items()))
            except Exception as exc:
                error = exc
        if type(snapshot) is dict:
            return snapshot
        what = type(error).__name__ if error is not None else "an error"
        problem = (
            f"reading them raised {what}: make items() work, and pass a copy of a dict another "
            "thread changes"
        )
    site = site or _caller_site()
    message = (
        f"{event.routing.name} tracked at {site} with properties of type "
        f"{type(properties).__qualname__}; {problem}. The event is sent without them"
    )
    name = event.routing.name
    rt.report(Incident("invalid_properties", message, event=name, site=site, error=error))
    if rt.strict:
        raise TrackingUsageError(message) from error
    return None


def _missing(rt: Runtime, kind: str, event: EventRegistry, site: str | None) -> None:
    site = site or _caller_site()
    name = event.routing.name
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
        level = event.routing.level
        message = (
            f"{name} tracked at {site} without a {level} id: it is sent without a group. Bind "
            f"{level}_id in the context, or pass group_id= to @tracks or track()"
        )
    _report(rt, kind, message, event, site)
    if rt.strict:
        raise MissingContextError(f"{message} (strict mode)")


def _deprecated(rt: Runtime, event: EventRegistry, site: str | None) -> None:
    site = site or _caller_site()
    spec = event.routing.spec
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
    """Report an unexpected exception inside instrumentor; never raises.

    Except at the recursion limit, where calling it raises RecursionError before its body runs:
    callers put the call itself in a ``try`` too, so that error never reaches business code.
    """
    try:
        rt = _active()
        rt.report(
            Incident(
                "internal_error",
                f"tracking failed at {site}: {exc!r}; the caller was not affected",
                event=event.routing.name if event is not None else None,
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
        try:  # noqa: SIM105 - suppress() is a call, which fails at the recursion limit too
            internal_error(exc, event if isinstance(event, EventRegistry) else None, "track()")
        except Exception:  # at the recursion limit even the report fails: never raise
            pass


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
    rt = _active()
    name = event.routing.name if event is not None else None
    rt.report(Incident(kind, message, event=name, site=site or _caller_site(), error=error))
    if rt.strict:
        raise error_type(message) from error


set_tracker(track)  # ``Events.X.track()``: the registry calls back into this layer
