"""Who is behind a request: the :class:`Identity` a resolver returns, and running resolvers safely.

The application supplies one resolver, ``request -> Identity | None`` (sync or async), that reads
its own session, cookie or token. Framework adapters call it through :func:`resolve_identity`
or :func:`aresolve_identity`, and bind what it returns with :func:`bind_identity`; none of them
raises. A resolver that returns ``None`` (an anonymous request) is normal: counted as
``identity_missing`` in :func:`~instrumentor.stats`, nothing more. One that raises, or returns
something that is not a usable :class:`Identity`, leaves the request working and untracked, and
is reported as an ``identity_error`` incident.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Union

from instrumentor.context import ContextToken, Group, _bind_or_raise, bind_context
from instrumentor.diagnostics import Incident, count_quietly, report_safely

__all__ = [
    "Identity",
    "IdentityResolver",
    "aresolve_identity",
    "bind_identity",
    "resolve_identity",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: ``request -> Identity | None``, or an async function returning the same.
IdentityResolver = Callable[[Any], Union["Identity", Awaitable[Union["Identity", None]], None]]


@dataclass(frozen=True)
class Identity:
    """Who is acting, as the server knows it: what a resolver returns for a request.

    Attributes:
        user_id: The signed-in user's id.
        account_id: The account (top-level group) the user acts in.
        workspace_id: The workspace, in the default account > workspace > project hierarchy.
        project_id: The project, in the default hierarchy.
        groups: Group ids of any other levels, by level name (for a custom hierarchy).
        user_traits: Traits of the user, sent with identify.
    """

    user_id: str | int | None = None
    account_id: str | int | Group | None = None
    workspace_id: str | int | Group | None = None
    project_id: str | int | Group | None = None
    groups: Mapping[str, str | int | Group] = field(default_factory=lambda: _EMPTY)
    user_traits: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def bind(self) -> ContextToken:
        """Bind this identity with :func:`~instrumentor.bind_context`; reset with the token."""
        return bind_context(**self._fields())

    def _fields(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "user_traits": self.user_traits or None,
            "account_id": self.account_id,
            "workspace_id": self.workspace_id,
            "project_id": self.project_id,
            "groups": self.groups or None,
        }

    @property
    def key(self) -> str | None:
        """A stable key for per-identity limits: the user id, else the account id."""
        for prefix, value in (("user", self.user_id), ("account", self.account_id)):
            if isinstance(value, Group):
                value = value.id
            if value is not None and str(value):
                return f"{prefix}:{value}"
        return None

    def __repr__(self) -> str:
        # Traits may hold personal data: the repr names ids only.
        return (
            f"Identity(user_id={self.user_id!r}, account_id={_id(self.account_id)!r}, "
            f"workspace_id={_id(self.workspace_id)!r}, project_id={_id(self.project_id)!r})"
        )


def _id(value: str | int | Group | None) -> str | int | None:
    return value.id if isinstance(value, Group) else value


def _describe(resolver: object) -> str:
    return getattr(resolver, "__qualname__", None) or type(resolver).__qualname__


def _checked(resolver: object, result: object) -> Identity | None:
    if result is None:
        count_quietly(
            "identity_missing",
            f"the identity resolver {_describe(resolver)} returned None: an anonymous request, "
            "not tracked",
        )
        return None
    if not isinstance(result, Identity):
        _report(
            f"the identity resolver {_describe(resolver)} returned a "
            f"{type(result).__qualname__}; return an instrumentor.integrations.Identity or None. "
            "The request is not tracked",
            resolver,
        )
        return None
    for name in ("user_traits", "groups"):  # what bind_context checks first, cheaply
        value = getattr(result, name)
        if not isinstance(value, Mapping):
            _report(
                f"the identity resolver {_describe(resolver)} returned an Identity whose {name} "
                f"is a {type(value).__qualname__}, not a mapping. The request is not tracked",
                resolver,
            )
            return None
    return result


def _report(message: str, resolver: object, error: BaseException | None = None) -> None:
    report_safely(Incident("identity_error", message, site=_describe(resolver), error=error))


def bind_identity(identity: Identity | None) -> ContextToken | None:
    """Bind ``identity`` for the request; never raises.

    Returns:
        The token for :func:`~instrumentor.reset_context`, or ``None`` when there is no
        identity or it could not be bound (an ``identity_error`` incident, even in strict
        mode: the request goes on untracked).
    """
    if identity is None:
        return None
    try:
        # Not bind_context: in strict mode it raises into the request, otherwise it keeps the
        # context unchanged and says nothing to the caller; either way, report and go on.
        return _bind_or_raise(**identity._fields())
    except Exception as exc:
        _report(
            f"{identity!r} cannot be bound ({exc}); the request goes on untracked",
            bind_identity,
            exc,
        )
        return None


def _raised(resolver: object, exc: Exception) -> None:
    _report(
        f"the identity resolver {_describe(resolver)} raised {type(exc).__qualname__}: the "
        "request goes on untracked. Fix the resolver, or return None for anonymous requests",
        resolver,
        exc,
    )


def resolve_identity(resolver: IdentityResolver, request: object) -> Identity | None:
    """Call a sync resolver for ``request``; never raises.

    An async resolver cannot be awaited here (a sync framework): it is reported as an
    ``identity_error`` and the request is untracked.

    Returns:
        The identity, or ``None`` when the resolver returned ``None`` (counted as
        ``identity_missing``, not an incident), raised, or returned something that is not a
        usable :class:`Identity` (an ``identity_error`` incident).
    """
    try:
        result = resolver(request)
    except Exception as exc:
        _raised(resolver, exc)
        return None
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: close it rather than leak a warning
        _report(
            f"the identity resolver {_describe(resolver)} is async, but this framework calls "
            "it synchronously; give a plain function. The request is not tracked",
            resolver,
        )
        return None
    return _checked(resolver, result)


async def aresolve_identity(resolver: IdentityResolver, request: object) -> Identity | None:
    """Call a sync or async resolver for ``request``; never raises.

    A sync resolver runs on the event loop, so it must be cheap (read a cookie or a header);
    one that does I/O should be ``async``.

    Returns:
        The identity, or ``None`` (see :func:`resolve_identity`).
    """
    try:
        result = resolver(request)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        _raised(resolver, exc)
        return None
    return _checked(resolver, result)
