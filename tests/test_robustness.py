"""Odd input never reaches the caller as an exception (property-based)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instrumentor import bind_context, clear_context, track, tracks
from instrumentor.testing import capture_events
from tests.plan import Events


class Weird:
    """An object that fights every conversion."""

    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq exploded")

    __hash__ = object.__hash__


odd = st.recursive(
    st.none()
    | st.integers()
    | st.floats()
    | st.text()
    | st.integers(1, 400_000).map(lambda n: "x" * n)
    | st.binary()
    | st.builds(Weird)
    | st.builds(object),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=10,
)
ids = st.one_of(st.text(max_size=50), st.integers())


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    user=ids, account=ids, traits=st.dictionaries(st.text(max_size=8), odd, max_size=4), props=odd
)
def test_tracking_with_odd_input_never_raises(
    user: Any, account: Any, traits: Any, props: Any
) -> None:
    """Strange ids, traits and properties are tracked; messages still serialise to JSON."""

    @tracks(Events.PLAN_UPGRADED, properties=lambda call: {"value": props})
    def upgrade() -> str:
        return "ok"

    clear_context()
    bind_context(user_id=user, user_traits=traits, account_traits=traits, account_id=account)
    with capture_events(strict=False) as tracked:
        assert upgrade() == "ok"
        track(Events.PLAN_UPGRADED, properties={"value": props})
    expected = 2 if str(user) else 0  # an empty user id is no user: dropped, counted
    assert len(tracked.tracks) == expected
    for message in tracked.messages:
        json.dumps(message.to_dict(), allow_nan=False)


@settings(max_examples=30)
@given(props=odd)
def test_properties_that_are_not_mappings_are_contained(props: Any) -> None:
    """A properties callable returning garbage is an incident, not an exception."""

    @tracks(Events.PLAN_UPGRADED, properties=lambda call: props)
    def upgrade() -> str:
        return "ok"

    clear_context()
    bind_context(user_id="u", account_id="a")
    with capture_events(strict=False):
        assert upgrade() == "ok"
