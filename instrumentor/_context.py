"""Who is acting: the identity and group context, one immutable snapshot per request scope.

Middleware binds it once per request; ``@tracks`` reads it at emission. It lives in one
:class:`contextvars.ContextVar`, so threads and asyncio tasks are isolated from each other and a
task inherits the context of the code that created it.

.. code-block:: python

    token = bind_context(user_id="u_1", account_id="acc_1", project_id="proj_1")
    try:
        handle_request()
    finally:
        reset_context(token)

Binding never raises at run time: ids are turned into strings (empty ones count as unbound),
traits are snapshotted as JSON data, and input that cannot be used is reported as an
``invalid_context`` incident while the context stays as it was.
"""

from __future__ import annotations

import contextvars
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from instrumentor._diagnostics import Incident
from instrumentor._messages import to_json_compatible
from instrumentor._readonly import ReadOnlyDict
from instrumentor._state import active
from instrumentor.exceptions import InstrumentorError, TrackingUsageError

__all__ = [
    "AnalyticsContext",
    "ContextToken",
    "Group",
    "bind_context",
    "clear_context",
    "context_var",
    "current_context",
    "reset_context",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: A token from :func:`bind_context`, for :func:`reset_context`.
ContextToken = contextvars.Token["AnalyticsContext"]


class _InvalidContextError(InstrumentorError, ValueError):
    """Input that cannot be bound. bind_context reports it; a direct Group("") raises it."""


_serials = itertools.count(1)  # AnalyticsContext.serial


_NO_IDS: Mapping[str, str] = ReadOnlyDict()


def _freeze(traits: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A snapshot of ``traits`` as JSON data: later changes by the caller do not show."""
    if traits is None:
        return _EMPTY
    if type(traits) is dict:  # the common case, without the abstract-class check
        return MappingProxyType(to_json_compatible(traits)) if traits else _EMPTY
    if not isinstance(traits, Mapping):
        raise _InvalidContextError(f"traits must be a mapping, got {type(traits).__qualname__}")
    if not traits:
        return _EMPTY
    return MappingProxyType(to_json_compatible(dict(traits)))


def _as_id(value: object) -> str | None:
    """An id as sent: a non-empty string, or None for 'not bound'."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None


@dataclass(frozen=True, slots=True)
class Group:
    """A group at one level of the hierarchy (an account, a workspace, a project).

    Attributes:
        id: The group id sent to the provider.
        name: A readable name, sent as the ``name`` trait.
        traits: Further traits of the group.
    """

    id: str
    name: str | None = None
    traits: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        group_id = _as_id(self.id)
        if group_id is None:
            raise _InvalidContextError("a group id must not be empty")
        object.__setattr__(self, "id", group_id)
        object.__setattr__(self, "traits", _freeze(self.traits))


@dataclass(frozen=True, eq=False, slots=True)
class AnalyticsContext:
    """An immutable snapshot of who is acting and in which groups.

    Attributes:
        user_id: The acting user's id, or ``None``.
        user_traits: Traits of the user, sent with identify.
        groups: The group bound at each hierarchy level, keyed by level name.
    """

    user_id: str | None = None
    user_traits: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    groups: Mapping[str, Group] = field(default_factory=lambda: _EMPTY)
    #: The group id bound at each level (derived from ``groups``, read-only; never part of
    #: equality).
    group_ids: Mapping[str, str] = field(init=False, repr=False, compare=False)
    #: A number no other context of this process has: what per-context caches key on, so that
    #: they need not hold the context itself.
    serial: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.user_traits, MappingProxyType):
            object.__setattr__(self, "user_traits", _freeze(self.user_traits))
        if not isinstance(self.groups, MappingProxyType):
            groups = {
                str(level): g if isinstance(g, Group) else Group(g)
                for level, g in dict(self.groups).items()
            }
            object.__setattr__(self, "groups", MappingProxyType(groups) if groups else _EMPTY)
        object.__setattr__(self, "user_id", _as_id(self.user_id))
        ids = {level: g.id for level, g in self.groups.items()}
        object.__setattr__(self, "group_ids", ReadOnlyDict(ids) if ids else _NO_IDS)
        object.__setattr__(self, "serial", next(_serials))

    def group_id(self, level: str) -> str | None:
        """The id of the group bound at ``level``, or ``None``."""
        return self.group_ids.get(level)

    @property
    def account_id(self) -> str | None:
        """The id bound at the ``account`` level."""
        return self.group_id("account")

    @property
    def workspace_id(self) -> str | None:
        """The id bound at the ``workspace`` level."""
        return self.group_id("workspace")

    @property
    def project_id(self) -> str | None:
        """The id bound at the ``project`` level."""
        return self.group_id("project")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnalyticsContext):
            return NotImplemented
        return (self.user_id, dict(self.user_traits), dict(self.groups)) == (
            other.user_id,
            dict(other.user_traits),
            dict(other.groups),
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        groups = ", ".join(f"{level}={g.id!r}" for level, g in self.groups.items())
        return f"AnalyticsContext(user_id={self.user_id!r}, groups={{{groups}}})"


_EMPTY_CONTEXT = AnalyticsContext()
#: The variable holding the current context. Read it with ``.get()``; bind through
#: :func:`bind_context` (integrations that replace a whole request's context ``set``/``reset`` it).
context_var: contextvars.ContextVar[AnalyticsContext] = contextvars.ContextVar(
    "instrumentor_context", default=_EMPTY_CONTEXT
)


#: Groups bound by a plain id (no name, no traits), shared by every context that binds that id:
#: immutable, so a request binding its account makes no new object (bounded; cleared when full).
_plain_groups: dict[str, Group] = {}
_PLAIN_GROUPS_MAX = 10_000


def _plain_group(group_id: str) -> Group:
    """The shared :class:`Group` of a plain, non-empty string id."""
    group = _plain_groups.get(group_id)
    if group is None:
        group = object.__new__(Group)
        object.__setattr__(group, "id", group_id)
        object.__setattr__(group, "name", None)
        object.__setattr__(group, "traits", _EMPTY)
        if len(_plain_groups) >= _PLAIN_GROUPS_MAX:
            _plain_groups.clear()
        _plain_groups[group_id] = group
    return group


def _as_group(
    value: str | int | Group, name: str | None, traits: Mapping[str, Any] | None
) -> Group:
    if type(value) is str and value and name is None and not traits:
        return _plain_group(value)
    if isinstance(value, Group):
        if name is None and traits is None:
            return value
        return Group(value.id, name if name is not None else value.name, traits or value.traits)
    return Group(str(value), name, traits or _EMPTY)


def _merged(
    base: AnalyticsContext,
    user_id: str | int | None,
    user_traits: Mapping[str, Any] | None,
    account_id: str | int | Group | None,
    account_name: str | None,
    account_traits: Mapping[str, Any] | None,
    workspace_id: str | int | Group | None,
    workspace_name: str | None,
    project_id: str | int | Group | None,
    project_name: str | None,
    groups: Mapping[str, str | int | Group] | None,
) -> AnalyticsContext:
    """``base`` with :func:`bind_context`'s keywords merged in; raises on input it cannot use.

    ``groups=`` is applied first, then the account, workspace and project shortcuts, then the
    user; a context whose groups did not change shares ``base``'s.
    """
    new_groups = dict(base.groups)
    if groups is not None:
        _bind_levels(new_groups, groups)
    _bind_shortcut(new_groups, "account", account_id, account_name, account_traits)
    _bind_shortcut(new_groups, "workspace", workspace_id, workspace_name, None)
    _bind_shortcut(new_groups, "project", project_id, project_name, None)
    new_user = _as_id(user_id)
    user = new_user if new_user is not None else base.user_id
    traits = _freeze(user_traits) if user_traits is not None else base.user_traits
    if new_groups == base.groups:
        return _sharing_groups(base, user, traits)
    ids = ReadOnlyDict({level: group.id for level, group in new_groups.items()})
    return _made(user, traits, MappingProxyType(new_groups) if new_groups else _EMPTY, ids)


def _bind_levels(bound: dict[str, Group], groups: Mapping[str, str | int | Group]) -> None:
    """Bind the levels ``groups=`` names into ``bound``; ``None`` and empty ids bind nothing."""
    if not isinstance(groups, Mapping):
        raise _InvalidContextError(
            f"groups must map levels to ids, got {type(groups).__qualname__}"
        )
    for level, value in (groups or {}).items():
        if value is not None and (isinstance(value, Group) or _as_id(value) is not None):
            bound[str(level)] = _as_group(value, None, None)


def _bind_shortcut(
    bound: dict[str, Group],
    level: str,
    group_id: str | int | Group | None,
    name: str | None,
    traits: Mapping[str, Any] | None,
) -> None:
    """Bind ``level`` from its keywords (``account_id``, ``account_name``...) into ``bound``.

    A new id replaces the group bound there; the same id again keeps its name and traits unless
    new ones are given; no id gives a bound group a new name or traits.
    """
    if isinstance(group_id, Group):
        bound[level] = _as_group(group_id, name, traits)
        return
    text_id = _as_id(group_id)
    if text_id is None:
        if (name is not None or traits is not None) and level in bound:
            bound[level] = _as_group(bound[level], name, traits)
        return
    existing = bound.get(level)
    if existing is not None and existing.id == text_id:
        bound[level] = _as_group(existing, name, traits)
    else:
        bound[level] = _as_group(str(text_id), name, traits)


def _sharing_groups(
    base: AnalyticsContext, user_id: str | None, user_traits: Mapping[str, Any]
) -> AnalyticsContext:
    """A context with ``base``'s groups (and their id index) shared, not copied.

    Both are immutable, so a context bound per request on top of the same groups costs little
    while its events wait in a queue.
    """
    return _made(user_id, user_traits, base.groups, base.group_ids)


def _made(
    user_id: str | None,
    user_traits: Mapping[str, Any],
    groups: Mapping[str, Group],
    group_ids: Mapping[str, str],
) -> AnalyticsContext:
    """A context of fields already checked and frozen (no ``__post_init__`` work)."""
    context: AnalyticsContext = object.__new__(AnalyticsContext)
    setattr_ = object.__setattr__
    setattr_(context, "user_id", user_id)
    setattr_(context, "user_traits", user_traits)
    setattr_(context, "groups", groups)
    setattr_(context, "group_ids", group_ids if group_ids else _NO_IDS)
    setattr_(context, "serial", next(_serials))
    return context


def bind_context(
    *,
    user_id: str | int | None = None,
    user_traits: Mapping[str, Any] | None = None,
    account_id: str | int | Group | None = None,
    account_name: str | None = None,
    account_traits: Mapping[str, Any] | None = None,
    workspace_id: str | int | Group | None = None,
    workspace_name: str | None = None,
    project_id: str | int | Group | None = None,
    project_name: str | None = None,
    groups: Mapping[str, str | int | Group] | None = None,
) -> ContextToken:
    """Bind identity and groups for the rest of the current scope, merged into what is bound.

    Ids may be strings or integers (they are sent as strings). ``groups`` binds levels of a
    custom hierarchy by name, e.g. ``groups={"organization": "org_1", "team": Group("t_2",
    name="Red")}``; the ``account_``/``workspace_``/``project_`` keywords are shortcuts for the
    default hierarchy.

    Empty ids count as not given. Traits are kept as a snapshot of JSON data, so changing the
    dicts afterwards changes nothing. Input that cannot be used (a traits object that is not a
    mapping, an id whose ``str()`` raises) leaves the context unchanged and is reported as an
    ``invalid_context`` incident; in strict mode it raises
    :class:`~instrumentor.TrackingUsageError`.

    Returns:
        A token that :func:`reset_context` takes to restore the previous context.
    """
    try:
        merged = _merged(
            context_var.get(),
            user_id,
            user_traits,
            account_id,
            account_name,
            account_traits,
            workspace_id,
            workspace_name,
            project_id,
            project_name,
            groups,
        )
    except Exception as exc:  # bad input from the application: reported, never raised
        _report_invalid(exc)
        return context_var.set(context_var.get())
    return context_var.set(merged)


def _replace_or_raise(
    user_id: str | int | None,
    user_traits: Mapping[str, Any] | None,
    account_id: str | int | Group | None,
    workspace_id: str | int | Group | None,
    project_id: str | int | Group | None,
    groups: Mapping[str, str | int | Group] | None,
) -> ContextToken:
    """Bind these fields as the whole context, merged into nothing that was bound; raises.

    For request adapters, which report failures their own way: a request starts from an empty
    context, whatever an earlier request on the same thread may have left behind.
    """
    merged = _merged(
        _EMPTY_CONTEXT,
        user_id,
        user_traits,
        account_id,
        None,
        None,
        workspace_id,
        None,
        project_id,
        None,
        groups,
    )
    return context_var.set(merged)


def _report_invalid(exc: Exception) -> None:
    rt = active()
    message = f"bind_context() ignored input it cannot use ({exc}); the context is unchanged"
    rt.report(Incident("invalid_context", message, error=exc))
    if rt.strict:
        raise TrackingUsageError(message) from exc


def reset_context(token: ContextToken) -> None:
    """Restore the context that was current before the :func:`bind_context` that gave ``token``."""
    context_var.reset(token)


def _replace_with_empty() -> ContextToken:
    """Bind the empty context (for a request without an identity); the token restores."""
    return context_var.set(_EMPTY_CONTEXT)


def clear_context() -> None:
    """Unbind everything in the current scope."""
    context_var.set(_EMPTY_CONTEXT)


def current_context() -> AnalyticsContext:
    """The context bound in the current scope (an empty one if nothing is bound)."""
    return context_var.get()
