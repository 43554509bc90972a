"""The explicit calls: ``identify()``, ``group()`` and ``establish_group_hierarchy()``.

Each sends its messages now (as an emission with sender ``None``) and records them in the bundle
state, under its lock, so that tracks do not repeat them and a user's calls stay in order.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Mapping
from typing import Any

from instrumentor import _state
from instrumentor._context import AnalyticsContext, Group, current_context
from instrumentor._emission import Emission, group_message, identify_message
from instrumentor._emitter import STRICT_ERRORS, internal_error, report_problem, state_of
from instrumentor._messages import IdentifyMessage, Message
from instrumentor._registry import GroupHierarchy, plan_hierarchy
from instrumentor._signals import event_emitted
from instrumentor._state import Runtime
from instrumentor.exceptions import MissingContextError, TrackingUsageError

__all__ = ["establish_group_hierarchy", "group", "identify"]

_UTC = _dt.timezone.utc


def _user_of(rt: Runtime, ctx: AnalyticsContext, hierarchy: GroupHierarchy) -> str | None:
    """The user id tracks send: the account with instance-level tracking, else the user."""
    return ctx.group_id(hierarchy.top) if rt.instance_level else ctx.user_id


def _send(
    ctx: AnalyticsContext, user_id: str | None, level: str, messages: tuple[Message, ...]
) -> None:
    """Queue ``messages`` (under the state's lock, held by the caller)."""
    if messages:
        emission = Emission(
            None, user_id, None, time.time(), ctx, None, (False, (level,)), messages
        )
        event_emitted.dispatch(None, emission)


def _active_runtime() -> Runtime | None:
    """The installed runtime if it sends anything (or checks, in strict mode), else ``None``."""
    rt = _state.active()
    return rt if rt.enabled and (event_emitted.receivers or rt.strict) else None


def identify(
    traits: Mapping[str, Any] | None = None, *, hierarchy: GroupHierarchy | None = None
) -> None:
    """Send an identify for the bound user now, with the top-level group (account) as its group.

    Args:
        traits: Traits to send, merged over the context's user traits.
        hierarchy: The hierarchy whose top level is the account; by default the plan's (see
            :func:`~instrumentor._registry.plan_hierarchy`).
    """
    try:
        rt = _active_runtime()
        if rt is None:
            return
        hierarchy = hierarchy or plan_hierarchy()
        ctx = current_context()
        user_id = _user_of(rt, ctx, hierarchy)
        if user_id is None:
            report_problem(
                "missing_user",
                "identify() called with no user bound; nothing sent",
                MissingContextError,
            )
            return
        when = _dt.datetime.now(_UTC)
        message = identify_message(ctx, hierarchy, user_id, when)
        if traits:
            message = IdentifyMessage(
                message.user_id, message.group_id, {**message.traits, **traits}, when
            )
        state = state_of(rt)
        with state.lock:
            state.record_identify(rt, ctx, hierarchy, user_id, time.time())
            _send(ctx, user_id, hierarchy.top, (message,))
    except STRICT_ERRORS:
        raise
    except Exception as exc:
        try:  # noqa: SIM105 - suppress() is a call, which fails at the recursion limit too
            internal_error(exc, None, "identify()")
        except Exception:  # at the recursion limit even the report fails: never raise
            pass


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
        ctx = current_context()
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
        user_id = _user_of(rt, ctx, hierarchy)
        message = group_message(ctx, hierarchy, level, merged, user_id, when)
        state = state_of(rt)
        with state.lock:
            state.record_group(rt, ctx, hierarchy, level, merged, user_id, time.time())
            _send(ctx, user_id, level, (message,))
    except STRICT_ERRORS:
        raise
    except Exception as exc:
        try:  # noqa: SIM105 - suppress() is a call, which fails at the recursion limit too
            internal_error(exc, None, "group()")
        except Exception:  # at the recursion limit even the report fails: never raise
            pass


def establish_group_hierarchy(hierarchy: GroupHierarchy | None = None) -> None:
    """Send a group call for every level bound in the context, top first, each with its parent.

    Call it on login or when the user enters a new group; later tracks then skip those calls
    while the user stays in those groups (at most ``bundle_ttl`` seconds). ``hierarchy``
    defaults to the plan's.
    """
    try:
        rt = _active_runtime()
        if rt is None:
            return
        hierarchy = hierarchy or plan_hierarchy()
        ctx = current_context()
        when = _dt.datetime.now(_UTC)
        messages: list[Message] = []
        state, now = state_of(rt), time.time()
        user_id = _user_of(rt, ctx, hierarchy)
        with state.lock:
            for level in hierarchy.levels:
                bound = ctx.groups.get(level)
                if bound is None:
                    continue
                messages.append(group_message(ctx, hierarchy, level, bound, user_id, when))
                state.record_group(rt, ctx, hierarchy, level, bound, user_id, now)
            _send(ctx, user_id, hierarchy.top, tuple(messages))
    except Exception as exc:
        try:  # noqa: SIM105 - suppress() is a call, which fails at the recursion limit too
            internal_error(exc, None, "establish_group_hierarchy()")
        except Exception:  # at the recursion limit even the report fails: never raise
            pass
