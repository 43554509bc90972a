"""The fake login every test app shares: who is signed in, read from request headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import instrumentor
from instrumentor.integrations import Identity


def identity_from(header: Callable[[str], str | None]) -> Identity | None:
    """The identity the headers name, through a case-insensitive lookup (``headers.get``).

    ``x-user`` signs in; ``x-ws`` adds a workspace, ``x-email`` a trait; ``x-fail`` makes the
    resolver raise;
    ``x-bad-traits`` gives the identity traits that are not a mapping, so it cannot be bound.
    """
    if header("x-fail") is not None:
        raise RuntimeError("session store down")
    user = header("x-user")
    if not user:
        return None
    email = header("x-email")
    traits: Any = {"email": email} if email else {}
    if header("x-bad-traits") is not None:
        traits = cast(Any, ["not a mapping"])
    return Identity(
        user_id=user, account_id="acc_1", workspace_id=header("x-ws"), user_traits=traits
    )


def context_seen() -> dict[str, Any]:
    """The whole bound context as a view sees it: user, group ids by level, user traits."""
    context = instrumentor.current_context()
    return {
        "user": context.user_id,
        "groups": {level: group.id for level, group in context.groups.items()},
        "traits": dict(context.user_traits),
    }


def sign_up() -> dict[str, Any]:
    """What a sign-up view does in an anonymous request: bind the new user itself."""
    instrumentor.bind_context(
        user_id="new_user", workspace_id="ws_new", user_traits={"plan": "trial"}
    )
    return context_seen()
