"""Celery context propagation: a task runs with the analytics context it was sent from.

:func:`propagate_context` connects three Celery signals. ``before_task_publish`` writes the
context bound where a task is sent (``bind_context``/``bound_context``) into the message's
``instrumentor_context`` header: the user and group ids, and their traits and names only when
asked for (they may be personal data). ``task_prerun`` binds the header's context in the
worker for the task's run (an empty context when there is none, so nothing a previous task
left bound leaks into this one) and ``task_postrun`` restores what was bound before, so
``@tracks`` on a task function (or ``track()`` inside it) emits for the user and groups of the
request that enqueued it. A task run eagerly (``task.apply()``, ``task_always_eager``) runs in
the caller's context and is left alone.

A header that cannot be read never breaks the task: it is reported as an ``invalid_context``
incident (logged, counted) and the task runs without a bound context.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

from instrumentor._context import (
    AnalyticsContext,
    ContextToken,
    Group,
    context_var,
    current_context,
)
from instrumentor._diagnostics import Incident
from instrumentor._state import report as report_incident

__all__ = ["HEADER", "context_from_header", "context_to_header", "propagate_context", "report"]

#: The message header that carries the context.
HEADER = "instrumentor_context"
_VERSION = 1

_connected = False
_traits = False  # whether headers carry traits and names (propagate_context(traits=True))
_connect_lock = threading.Lock()
_tokens: dict[str, ContextToken] = {}  # task id -> token to restore after the run


def context_to_header(context: AnalyticsContext, *, traits: bool = False) -> dict[str, Any] | None:
    """``context`` as JSON data for the header, or ``None`` when nothing is bound.

    Args:
        context: The context to send.
        traits: Include user and group traits and group names (by default only the ids).
    """
    if context.user_id is None and not context.groups:
        return None
    return {
        "v": _VERSION,
        "user_id": context.user_id,
        "user_traits": dict(context.user_traits) if traits else {},
        "groups": {
            level: {
                "id": group.id,
                "name": group.name if traits else None,
                "traits": dict(group.traits) if traits else {},
            }
            for level, group in context.groups.items()
        },
    }


def context_from_header(data: Any) -> AnalyticsContext:
    """Rebuild the context from :func:`context_to_header`'s form.

    Raises:
        ValueError: If ``data`` is not that form.
    """
    if not isinstance(data, Mapping) or data.get("v") != _VERSION:
        raise ValueError(f"expected a version {_VERSION} context object")
    user_id, traits, groups = data.get("user_id"), data.get("user_traits"), data.get("groups")
    if user_id is not None and not isinstance(user_id, str):
        raise ValueError("user_id must be a string")
    if not isinstance(traits, Mapping) or not isinstance(groups, Mapping):
        raise ValueError("user_traits and groups must be objects")
    built: dict[str, Group] = {}
    for level, item in groups.items():
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            raise ValueError(f"group {level!r} needs a string id")
        name, group_traits = item.get("name"), item.get("traits") or {}
        if name is not None and not isinstance(name, str):
            raise ValueError(f"group {level!r}: name must be a string")
        if not isinstance(group_traits, Mapping):
            raise ValueError(f"group {level!r}: traits must be an object")
        try:
            built[str(level)] = Group(item["id"], name, group_traits)
        except Exception as exc:  # e.g. an empty id
            raise ValueError(f"group {level!r}: {exc}") from None
    return AnalyticsContext(user_id=user_id, user_traits=traits, groups=built)


def propagate_context(app: Any = None, *, traits: bool = False) -> None:
    """Carry the analytics context from where a task is sent into the task's run. Idempotent.

    Celery's signals are process-wide, so this applies to every app in the process; ``app``
    is accepted for symmetry with ``CeleryQueue(app)`` (which calls this by default). Call it
    in the module that creates the app, so that web processes and workers both run it.

    Args:
        app: The Celery app (unused: the signals are process-wide).
        traits: Also send user and group traits and group names in task headers; they may be
            personal data, so by default only ids travel. The last call decides.
    """
    global _connected, _traits
    from celery import signals  # optional dependency: imported when propagation is turned on

    with _connect_lock:
        _traits = traits
        if _connected:
            return
        signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=HEADER)
        signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=HEADER)
        signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=HEADER)
        _connected = True


def report(
    kind: str,
    message: str,
    *,
    site: str | None,
    error: BaseException | None = None,
    key: str | None = None,
) -> None:
    """Report an incident from Celery's side (count, log, ``on_error``); never raises."""
    with contextlib.suppress(Exception):  # reporting must not break the task either
        report_incident(Incident(kind, message, site=site, error=error), key)


def _on_publish(sender: Any = None, headers: Any = None, **_: Any) -> None:
    try:
        data = context_to_header(current_context(), traits=_traits)
        if data is not None and isinstance(headers, dict):
            headers[HEADER] = data
    except Exception as exc:  # the task is still sent, without a context
        report(
            "invalid_context",
            f"could not add the context to task {sender}: {exc}",
            site=str(sender),
            error=exc,
        )


def _on_prerun(task_id: Any = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    if getattr(request, "is_eager", False):
        return  # run on the caller's thread, in the caller's context
    context = AnalyticsContext()  # no header: nothing bound, whatever a previous task left
    try:
        raw = getattr(request, HEADER, None)
        if raw is not None:
            context = context_from_header(raw)
    except Exception as exc:
        name = getattr(task, "name", None)
        report(
            "invalid_context",
            f"task {name} has a malformed {HEADER} header ({exc}); it runs without a context",
            site=str(name),
            error=exc,
        )
    _tokens[str(task_id)] = context_var.set(context)


def _on_postrun(task_id: Any = None, **_: Any) -> None:
    token = _tokens.pop(str(task_id), None)
    if token is None:
        return
    try:
        context_var.reset(token)
    except ValueError:  # run in another context than prerun's: leave nothing bound here
        context_var.set(AnalyticsContext())
