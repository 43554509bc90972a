"""The fake login every test app shares: who is signed in, read from request headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from instrumentor.integrations import Identity


def identity_from(header: Callable[[str], str | None]) -> Identity | None:
    """The identity the headers name, through a case-insensitive lookup (``headers.get``).

    ``x-user`` signs in; ``x-ws`` adds a workspace; ``x-fail`` makes the resolver raise;
    ``x-bad-traits`` gives the identity traits that are not a mapping, so it cannot be bound.
    """
    if header("x-fail") is not None:
        raise RuntimeError("session store down")
    user = header("x-user")
    if not user:
        return None
    traits = cast(Any, ["not a mapping"]) if header("x-bad-traits") is not None else {}
    return Identity(
        user_id=user, account_id="acc_1", workspace_id=header("x-ws"), user_traits=traits
    )
