"""Cross-origin posts on every adapter, real servers: same-origin by default, CORS if allowed.

The FastAPI and Flask test apps get ``allow_origin`` from their TrackEndpoint, Django from
``INSTRUMENTOR["ALLOW_ORIGIN"]``: the same rules, from the shared endpoint, on each.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import httpx
import pytest

from instrumentor.testing import CapturedEvents
from tests.integrations.servers import Served, served
from tests.plan import Events

KINDS = ["fastapi", "flask", "django-wsgi", "django-asgi"]
FRONT = "http://front.test:8080"
EVENT = {"event": "Search_Performed"}
CORS = ("access-control-allow-origin", "access-control-allow-credentials")
_users = itertools.count()


@contextlib.contextmanager
def running(kind: str, *, allow: object = "default") -> Iterator[Served]:
    """Serve ``kind`` with ``allow_origin=allow`` (``"default"``: the adapter's own default)."""
    if not kind.startswith("django"):
        options = {} if allow == "default" else {"allow_origin": allow}
        with served(kind, **options) as server:
            yield server
        return
    from django.test import override_settings

    from tests.integrations.django_project import settings as project

    options = {} if allow == "default" else {"ALLOW_ORIGIN": allow}
    # Served first: that sets Django up; the views read INSTRUMENTOR again once it changes.
    with served(kind) as s, override_settings(INSTRUMENTOR={**project.INSTRUMENTOR, **options}):
        yield s


def user(server: Served) -> dict[str, str]:
    return server.user(f"cors-{next(_users)}")


def preflight(server: Served, origin: str) -> httpx.Response:
    return httpx.options(
        f"{server.url}/analytics/track",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-csrftoken",
        },
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_foreign_origin_is_refused_by_default(kind: str, captured: CapturedEvents) -> None:
    """Without allow_origin, only the request's own origin may post: others get 403."""
    with running(kind) as server:
        port = server.url.rsplit(":", 1)[1]
        foreign = ["https://evil.test", "null", f"http://localhost:{port}", "http://127.0.0.1:1"]
        for origin in foreign:
            refused = server.post(EVENT, {**user(server), "origin": origin})
            assert (refused.status_code, refused.json()["error"]) == (403, "origin_not_allowed")
            assert not any(name in refused.headers for name in CORS), origin
        own = server.post(EVENT, {**user(server), "origin": server.url})
        assert own.status_code == 202
        assert not any(name in own.headers for name in CORS)
        assert server.post(EVENT, user(server)).status_code == 202  # no Origin: as before
    if kind.startswith("django"):  # ALLOW_ORIGIN None: the own origin only, not any origin
        with running(kind, allow=None) as server:
            refused = server.post(EVENT, {**user(server), "origin": "https://evil.test"})
            assert refused.status_code == 403
            assert server.post(EVENT, {**user(server), "origin": server.url}).status_code == 202
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=3 if kind.startswith("django") else 2)


@pytest.mark.parametrize("kind", KINDS)
def test_an_allowed_origin_gets_cors_headers(kind: str, captured: CapturedEvents) -> None:
    """An allowed origin's preflight is 204 with CORS headers; so is its POST's answer."""
    with running(kind, allow=[FRONT]) as server:
        answer = preflight(server, FRONT)
        assert answer.status_code == 204, answer.text
        headers = answer.headers
        assert headers["access-control-allow-origin"] == FRONT
        assert headers["access-control-allow-methods"] == "POST"
        assert headers["access-control-allow-headers"] == "content-type, x-csrftoken"
        assert headers["access-control-allow-credentials"] == "true"
        assert int(headers["access-control-max-age"]) > 0
        assert "origin" in headers["vary"].lower()
        posted = server.post(EVENT, {**user(server), "origin": FRONT})
        assert posted.status_code == 202
        assert posted.headers["access-control-allow-origin"] == FRONT
        assert posted.headers["access-control-allow-credentials"] == "true"
        assert "origin" in posted.headers["vary"].lower()
        # An allowed origin reads its refusals too (here: no one signed in).
        anonymous = server.post(EVENT, {"origin": FRONT})
        assert anonymous.status_code == 401
        assert anonymous.headers["access-control-allow-origin"] == FRONT
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_origin_preflight_is_403_without_cors(
    kind: str, captured: CapturedEvents
) -> None:
    """A preflight from an origin not allowed, ``null`` included, is 403 with no CORS header."""
    with running(kind, allow=[FRONT]) as server:
        for origin in ("https://evil.test", "null", "https://front.test:8080"):
            answer = preflight(server, origin)
            assert (answer.status_code, answer.json()["error"]) == (403, "origin_not_allowed")
            assert not any(name.startswith("access-control-") for name in answer.headers)
        refused = server.post(EVENT, {**user(server), "origin": "null"})
        assert refused.status_code == 403
    captured.assert_nothing_tracked()
