"""Who is behind a request: the :class:`Identity` a resolver returns, and running resolvers safely.

The application supplies one resolver, ``request -> Identity | None`` (sync or async), that reads
its own session, cookie or token. Framework adapters call it through :func:`resolve_identity`
or :func:`aresolve_identity`, and start the request with :func:`bind_request_identity`; none of
them raises. A resolver that returns ``None`` (an anonymous request) is normal: counted as
``identity_missing`` in :func:`~instrumentor.stats`, nothing more. One that raises, or returns
something that is not a usable :class:`Identity`, leaves the request working and untracked, and
is reported as an ``identity_error`` incident. Any request may cause one (a malformed token
sent on every request), so they are sampled: ``on_error`` hears of each resolver and kind of
failure once a minute, like the log.

A request's context is never merged into what was bound before it: an adapter binds the
identity over an empty context and resets that one token when the request ends, so nothing a
request (or a view during it) binds reaches the next request on the same thread or task.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Union

from instrumentor._context import (
    ContextToken,
    Group,
    _replace_or_raise,
    _replace_with_empty,
    bind_context,
    reset_context,
)
from instrumentor._diagnostics import Incident, count_quietly
from instrumentor._state import report as report_incident

__all__ = [
    "Identity",
    "IdentityResolver",
    "aresolve_identity",
    "bind_identity",
    "bind_request_identity",
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
        return bind_context(**_bind_keywords(self))

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


def _bind_keywords(identity: Identity) -> dict[str, Any]:
    """The :func:`~instrumentor.bind_context` keywords that bind ``identity``."""
    return {
        "user_id": identity.user_id,
        "user_traits": identity.user_traits or None,
        "account_id": identity.account_id,
        "workspace_id": identity.workspace_id,
        "project_id": identity.project_id,
        "groups": identity.groups or None,
    }


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
            why=f"returned {type(result).__qualname__}",
        )
        return None
    for name in ("user_traits", "groups"):  # what bind_context checks first, cheaply
        value = getattr(result, name)
        if not isinstance(value, Mapping):
            _report(
                f"the identity resolver {_describe(resolver)} returned an Identity whose {name} "
                f"is a {type(value).__qualname__}, not a mapping. The request is not tracked",
                resolver,
                why=f"{name} not a mapping",
            )
            return None
    return result


def _report(
    message: str, resolver: object, error: BaseException | None = None, *, why: str = ""
) -> None:
    # Request-driven (one bad token can come with every request): sampled per resolver and
    # kind of failure, so on_error hears of each once a minute, not once a request.
    site = _describe(resolver)
    incident = Incident("identity_error", message, site=site, error=error)
    why = why or (type(error).__qualname__ if error is not None else "")
    report_incident(incident, key=f"identity {site} {why}", sampled=True)


def bind_identity(identity: Identity | None) -> ContextToken | None:
    """Bind ``identity`` as the whole context, replacing what is bound; never raises.

    Nothing bound before is kept (no merge): a workspace or traits left over from elsewhere
    do not join this identity.

    Returns:
        The token for :func:`~instrumentor.reset_context`, or ``None`` when there is no
        identity or it could not be bound (an ``identity_error`` incident, even in strict
        mode: the request goes on untracked), and nothing was bound.
    """
    if identity is None:
        return None
    try:
        # Not bind_context: in strict mode it raises into the request, otherwise it keeps the
        # context unchanged and says nothing to the caller; either way, report and go on.
        return _replace_or_raise(**_bind_keywords(identity))
    except Exception as exc:
        _report(
            f"{identity!r} cannot be bound ({exc}); the request goes on untracked",
            bind_identity,
            exc,
        )
        return None


def bind_request_identity(identity: Identity | None) -> tuple[ContextToken, Identity | None]:
    """Start a request's context: ``identity`` over an empty context, or the empty context.

    What an adapter calls when a request begins, anonymous or not; never raises. Resetting the
    token when the request ends (in a ``finally``) undoes everything bound since, the
    identity and whatever the views bound, e.g. a sign-up view's ``bind_context``.

    Returns:
        The token for :func:`~instrumentor.reset_context`, always; and the identity that is
        bound, or ``None`` when there is none or it could not be bound (then the context is
        empty, and the request untracked).
    """
    token = bind_identity(identity)
    if token is not None:
        return token, identity
    return _replace_with_empty(), None


def reset_quietly(token: ContextToken | None, site: str) -> None:
    """Reset a request's token in a ``finally``; never raises (an ``internal_error`` if it fails).

    Not exported: the adapters' guard for a token already reset or made in another context.
    """
    if token is None:
        return
    try:
        reset_context(token)
    except (ValueError, RuntimeError) as exc:
        report_incident(
            Incident(
                "internal_error", "the request's context could not be reset", site=site, error=exc
            )
        )


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
            why="async",
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
