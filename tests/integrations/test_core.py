"""Identity resolution, the rate limiter and the JS client's package data."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any, cast

import pytest

import instrumentor
from instrumentor import Group
from instrumentor.integrations import (
    Identity,
    TokenBucketLimiter,
    aresolve_identity,
    bind_identity,
    resolve_identity,
    script_reply,
    script_source,
)
from instrumentor.integrations._script import compact_script
from instrumentor.testing import capture_events


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_at_its_rate() -> None:
    """The token bucket allows a burst, then refills at its rate up to the burst size."""
    clock = FakeClock()
    limiter = TokenBucketLimiter(2.0, 3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    clock.now += 100
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # capped at the burst


def test_bucket_memory_is_bounded() -> None:
    """The limiter keeps at most max_keys buckets, the most recent ones."""
    clock = FakeClock()
    limiter = TokenBucketLimiter(1.0, 1, max_keys=100, clock=clock)
    for i in range(10_000):
        limiter.acquire(f"user-{i}")
    assert len(limiter) == 100
    limiter.acquire("hot")
    assert limiter.acquire("hot") > 0  # the most recent keys are the ones kept


def test_bucket_rejects_bad_settings() -> None:
    """A zero rate or burst raises ValueError naming it."""
    with pytest.raises(ValueError, match="rate"):
        TokenBucketLimiter(0, 1)
    with pytest.raises(ValueError, match="burst"):
        TokenBucketLimiter(1, 0)


def test_identity_binds_and_keys() -> None:
    """Identity binds until reset, is keyed by user else account, and hides traits in repr."""
    identity = Identity(
        user_id=7,
        account_id=Group("acc_1", name="Acme"),
        groups={"team": "t_1"},
        user_traits={"plan": "pro"},
    )
    token = identity.bind()
    try:
        context = instrumentor.current_context()
        assert context.user_id == "7"
        assert context.groups["account"].name == "Acme"
        assert context.group_id("team") == "t_1"
        assert dict(context.user_traits) == {"plan": "pro"}
    finally:
        instrumentor.reset_context(token)
    assert instrumentor.current_context().user_id is None
    assert identity.key == "user:7"
    assert Identity(account_id=Group("acc_1")).key == "account:acc_1"
    assert Identity().key is None
    assert "plan" not in repr(identity)


def test_resolvers_that_fail_leave_the_request_untracked() -> None:
    """Raising, wrong-type or async resolvers give no identity and an identity_error each."""

    def raising(request: Any) -> Identity:
        raise LookupError("no session table")

    def wrong(request: Any) -> Any:
        return {"user_id": "u"}

    async def asynchronous(request: Any) -> Identity:
        return Identity(user_id="u")

    with capture_events(strict=False) as captured:
        assert resolve_identity(raising, object()) is None
        assert resolve_identity(wrong, object()) is None
        assert resolve_identity(lambda request: None, object()) is None
        assert resolve_identity(asynchronous, object()) is None  # sync frameworks cannot await
        assert resolve_identity(lambda request: Identity(user_id=request), "u_1") == Identity(
            user_id="u_1"
        )
    # An anonymous request (None) is normal: counted, but no incident.
    kinds = [incident.kind for incident in captured.incidents]
    assert kinds == ["identity_error", "identity_error", "identity_error"]
    assert instrumentor.stats()["identity_error"] == 3
    assert instrumentor.stats()["identity_missing"] == 1


def test_async_resolution_takes_sync_and_async_resolvers() -> None:
    """aresolve_identity() awaits async resolvers, calls sync ones, and turns a raise into None."""

    async def asynchronous(request: Any) -> Identity:
        await asyncio.sleep(0)
        return Identity(user_id=request)

    async def raising(request: Any) -> Identity:
        raise RuntimeError("boom")

    async def main() -> list[Identity | None]:
        return [
            await aresolve_identity(asynchronous, "a"),
            await aresolve_identity(lambda request: Identity(user_id=request), "b"),
            await aresolve_identity(raising, "c"),
        ]

    with capture_events(strict=False):
        assert asyncio.run(main()) == [Identity(user_id="a"), Identity(user_id="b"), None]


def test_script_is_package_data_and_cacheable() -> None:
    """The script ships as package data, is cached with an ETag (304) and refuses POST (405)."""
    source = script_source()
    assert b"keepalive: true" in source
    assert b"sendBeacon" in source
    reply = script_reply("GET")
    headers = dict(reply.headers)
    assert reply.status == 200
    assert reply.body == compact_script(source)
    assert headers["content-type"].startswith("text/javascript")
    assert "max-age" in headers["cache-control"]
    assert script_reply("GET", headers["etag"]).status == 304
    assert script_reply("GET", '"other"').status == 200
    assert script_reply("POST").status == 405


def test_importing_instrumentor_imports_no_web_framework() -> None:
    """Importing instrumentor and its integrations loads no web framework."""
    from tests.support import run_python

    result = run_python(
        code="""
        import sys
        import instrumentor, instrumentor.integrations
        frameworks = ("starlette", "fastapi", "uvicorn", "flask", "werkzeug", "django", "asgiref")
        loaded = sorted(m for m in frameworks if m in sys.modules)
        print(loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_script_is_served_compact_and_comments_stay_on_their_own_lines() -> None:
    """The served script drops whole comment lines only and stays under 2.5 KB."""
    source = script_source().decode()
    served = script_reply("GET").body.decode()
    assert len(served.encode()) < 2500  # "a couple of KB"; the commented file is larger
    assert len(served) < len(source)
    # The compactor drops whole comment lines only: a comment after code would be served.
    code = [
        line.strip()
        for line in source.splitlines()
        if not line.strip().startswith(("//", "/*", "*"))
    ]
    assert not [line for line in code if " //" in line or line.endswith("*/")]
    assert "//" not in served.split("\n", 1)[1]
    assert "data-endpoint" in served
    assert compact_script(b"/* a\n * b */\n  var a = 1;\n  // c\n\n  a();\n").endswith(
        b"\nvar a = 1;\na();\n"
    )


def test_a_missing_script_file_answers_404_not_500(tmp_path: Path) -> None:
    """Broken packaging (the JS file not installed): an incident and a 404, never a raise."""
    from tests.support import ROOT, run_python

    shutil.copytree(ROOT / "instrumentor", tmp_path / "instrumentor")
    (tmp_path / "instrumentor/integrations/static/instrumentor.js").unlink()
    result = run_python(
        code=f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import instrumentor
        from instrumentor.integrations import Incoming, TrackEndpoint
        assert instrumentor.__file__.startswith({str(tmp_path)!r})
        kinds = []
        instrumentor.configure(enabled=False, on_error=lambda i: kinds.append(i.kind))
        reply = TrackEndpoint().script(Incoming("GET"))
        print(reply.status, reply.json()["error"], kinds)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["404", "not_found", "['internal_error']"]
    assert "Reinstall instrumentor" in result.stderr


@pytest.mark.parametrize("strict", [False, True])
def test_an_identity_that_cannot_be_bound_is_an_identity_error(strict: bool) -> None:
    """An identity with bad traits or groups is an identity_error and is never bound or raised."""
    bad_traits = Identity(user_id="u", user_traits=cast(Any, ["not", "a", "mapping"]))
    bad_groups = Identity(user_id="u", groups=cast(Any, "team"))
    with capture_events(strict=strict) as captured:
        for bad in (bad_traits, bad_groups):

            def resolver(request: object, bad: Identity = bad) -> Identity:
                return bad

            assert resolve_identity(resolver, object()) is None
            assert bind_identity(bad) is None  # never raises, even in strict mode
        assert instrumentor.current_context().user_id is None
        assert bind_identity(None) is None
    assert instrumentor.stats()["identity_error"] == 4
    assert {incident.kind for incident in captured.incidents} >= {"identity_error"}
