"""What is Django's own: settings, CSRF, origins, async resolvers, threads, the upload cap."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import override_settings

import instrumentor
from instrumentor.integrations import Identity
from instrumentor.integrations.django import AnalyticsMiddleware, allowed_origin
from instrumentor.testing import CapturedEvents
from tests.integrations.django_project import settings as project
from tests.integrations.servers import Served, served
from tests.plan import Events

KINDS = ["django-wsgi", "django-asgi"]


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Served]:
    with served(request.param) as running:
        yield running


def settings_with(**options: Any) -> Any:
    """``override_settings`` for INSTRUMENTOR: the project's, changed by ``options``."""
    return override_settings(INSTRUMENTOR={**project.INSTRUMENTOR, **options})


async def aresolve(request: HttpRequest) -> Identity | None:
    """An async resolver."""
    from tests.integrations.django_project.views import resolve_identity

    return resolve_identity(request)


def test_work_off_the_request_thread(server: Served) -> None:
    """async_to_sync and with_current_context() carry the user to other threads; a pool does not."""
    seen = httpx.get(f"{server.url}/thread", headers=server.user("usr_1")).json()
    user = f"{server.kind}-usr_1"
    assert seen == {"pool": None, "async_to_sync": user, "with_current_context": user}


def test_an_async_resolver(server: Served, captured: CapturedEvents) -> None:
    """An async RESOLVER works for sync and async views and for the track endpoint."""
    with settings_with(RESOLVER=f"{__name__}.aresolve"):
        for path in ("/whoami", "/async"):
            response = httpx.get(f"{server.url}{path}", headers=server.user("usr_2"))
            assert response.json() == {"user": f"{server.kind}-usr_2"}
        assert server.post({"event": "Search_Performed"}, server.user("usr_2")).status_code == 202
    captured.assert_tracked(Events.SEARCH_PERFORMED, user_id=f"{server.kind}-usr_2", times=1)


def test_csrf_when_asked_for(server: Served, captured: CapturedEvents) -> None:
    """With CSRF=True a post without a valid CSRF token is 403 and with one is 202."""
    token = "a" * 32
    user = server.user("usr_3")
    with settings_with(CSRF=True):
        assert server.post({"event": "Search_Performed"}, user).status_code == 403
        with_token = server.post(
            {"event": "Search_Performed"},
            {**user, "cookie": f"csrftoken={token}", "x-csrftoken": token},
        )
        assert with_token.status_code == 202
    captured.assert_tracked(Events.SEARCH_PERFORMED, times=1)


def test_foreign_origins_are_refused(server: Served, captured: CapturedEvents) -> None:
    """A foreign Origin is 403 origin_not_allowed, with ALLOW_ORIGIN None too (own origin only)."""
    user = server.user("usr_4")
    refused = server.post({"event": "Search_Performed"}, {**user, "origin": "https://evil.test"})
    assert (refused.status_code, refused.json()["error"]) == (403, "origin_not_allowed")
    assert server.post({"event": "Search_Performed"}, {**user, "origin": server.url}).is_success
    with settings_with(ALLOW_ORIGIN=None):
        again = server.post({"event": "Search_Performed"}, {**user, "origin": "https://evil.test"})
        assert again.status_code == 403
        assert server.post({"event": "Search_Performed"}, {**user, "origin": server.url})
    assert len(captured.tracks) == 2


def test_a_lower_data_upload_max_memory_size_lowers_the_limit(
    server: Served, captured: CapturedEvents
) -> None:
    """A DATA_UPLOAD_MAX_MEMORY_SIZE below the body limit makes the endpoint answer 413."""
    body = {"event": "Search_Performed", "group_id": "x" * 100}
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=64):
        assert server.post(body, server.user("usr_5")).status_code == 413
    captured.assert_nothing_tracked()


def test_only_the_own_origin_and_csrf_trusted_origins_may_track(
    server: Served, captured: CapturedEvents
) -> None:
    """Django's CSRF rule: ALLOWED_HOSTS = ["*"] lets any host in, not any page's origin."""
    user = server.user("usr_14")
    port = server.url.rsplit(":", 1)[1]
    with override_settings(ALLOWED_HOSTS=["*"], CSRF_TRUSTED_ORIGINS=["https://*.cdn.test"]):
        for origin, status in (
            ("https://evil.test", 403),
            (f"https://127.0.0.1:{port}", 403),  # the own host, another scheme
            (f"http://localhost:{port}", 403),  # an allowed host, but not this request's
            (server.url, 202),
            ("https://a.cdn.test", 202),
        ):
            response = server.post({"event": "Search_Performed"}, {**user, "origin": origin})
            assert response.status_code == status, origin
    assert len(captured.tracks) == 2


@override_settings(
    ALLOWED_HOSTS=["app.test", ".example.test"],
    CSRF_TRUSTED_ORIGINS=["https://front.test", "https://*.cdn.test", "http://*.dev.test:8000"],
)
def test_allowed_origin_is_csrf_trusted_origins() -> None:
    """allowed_origin() follows CSRF_TRUSTED_ORIGINS (wildcards, scheme, port), not hosts."""
    assert allowed_origin("https://front.test")
    assert allowed_origin("https://a.cdn.test")
    assert allowed_origin("https://cdn.test")  # as Django's is_same_domain has it
    assert allowed_origin("http://x.dev.test:8000")
    assert not allowed_origin("http://x.dev.test:9000")
    assert not allowed_origin("http://a.cdn.test")
    assert not allowed_origin("https://front.test:8443")
    assert not allowed_origin("https://front.test.evil")
    assert not allowed_origin("https://evilcdn.test")
    # ALLOWED_HOSTS says which hosts the server answers for, not which pages may post to it.
    assert not allowed_origin("https://app.test")
    assert not allowed_origin("https://sibling.example.test")
    assert not allowed_origin("https://evil.test")
    assert not allowed_origin("null")
    assert not allowed_origin("http://[::1")  # urlsplit raises on it


def test_refusals_are_not_logged_by_django_again(server: Served) -> None:
    """Django logs a WARNING per 4xx on django.request; the endpoint logs, sampled, itself."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        for _ in range(3):
            assert server.post({"event": "Nope_Happened"}, server.user("usr_15")).status_code == 422
        assert httpx.get(f"{server.url}/nowhere").status_code == 404  # Django's own: logged
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == ["Not Found: /nowhere"]


def _response(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


async def authorize_async(identity: Identity, request: HttpRequest, level: str, gid: str) -> bool:
    """An async authorize_group, which the sync track view cannot await."""
    return True


def test_authentication_below_the_middleware_is_reported_once(captured: CapturedEvents) -> None:
    """AuthenticationMiddleware placed after ours is one bad_configuration incident."""
    auth = "django.contrib.auth.middleware.AuthenticationMiddleware"
    with override_settings(MIDDLEWARE=[*project.MIDDLEWARE, auth]):
        AnalyticsMiddleware(_response)
        AnalyticsMiddleware(_response)  # Django builds a chain per handler: said once
    assert [incident.kind for incident in captured.incidents] == ["bad_configuration"]
    assert f"{auth} comes after" in captured.incidents[0].message
    with override_settings(MIDDLEWARE=[auth, *project.MIDDLEWARE, "x.CommonMiddleware"]):
        AnalyticsMiddleware(_response)
    assert len(captured.incidents) == 1


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (None, "set INSTRUMENTOR"),
        ({}, "set INSTRUMENTOR"),
        ({"RESOLVER": "nowhere.resolve"}, "cannot import 'nowhere.resolve'"),
        ({"RESOLVER": 42}, "must be a callable"),
        ({**project.INSTRUMENTOR, "RATES": 1}, "unknown INSTRUMENTOR keys ['RATES']"),
        ({**project.INSTRUMENTOR, "MAX_BODY": 1}, "max_body must be at least 16"),
        (
            {**project.INSTRUMENTOR, "AUTHORIZE_GROUP": f"{__name__}.authorize_async"},
            "is async, but Django runs the track view synchronously",
        ),
    ],
)
def test_a_wrong_setting_fails_when_the_middleware_loads(setting: Any, message: str) -> None:
    """A missing or invalid INSTRUMENTOR setting raises ImproperlyConfigured naming the problem."""
    with override_settings(INSTRUMENTOR=setting), pytest.raises(ImproperlyConfigured) as error:
        AnalyticsMiddleware(_response)
    assert message in str(error.value)
    assert instrumentor.current_context().user_id is None


def test_the_project_is_set_up_as_the_docs_say() -> None:
    """The lines of the docs' settings.py and urls.py that name instrumentor are the project's."""
    from tests.support import ROOT

    page = (ROOT / "docs" / "backend-routing.md").read_text(encoding="utf-8")
    section = page[page.index("## Set-up with Django") :]
    blocks = [
        block
        for block in re.findall(r"```py\n(.*?)```", section, re.DOTALL)
        if block.startswith(("# settings.py", "# urls.py"))
    ]
    assert len(blocks) == 2
    project = "".join(
        (ROOT / "tests/integrations/django_project" / name).read_text(encoding="utf-8")
        for name in ("settings.py", "urls.py")
    )
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    named = [line for line in lines if "instrumentor" in line or "INSTRUMENTOR" in line]
    assert len(named) == 4, named
    for line in named:
        assert line in project, line


@pytest.mark.parametrize("setting", [None, {"RESOLVER": "nowhere.resolve"}])
def test_the_urls_without_the_middleware_and_a_wrong_setting_answer_503(
    setting: Any, captured: CapturedEvents
) -> None:
    """No 500 from the views: a 503 that says analytics is not configured, and an incident."""
    from django.core.wsgi import get_wsgi_application

    from tests.integrations.servers import serve_wsgi

    without = [m for m in project.MIDDLEWARE if "instrumentor" not in m]
    with override_settings(MIDDLEWARE=without, INSTRUMENTOR=setting):
        with serve_wsgi(get_wsgi_application()) as url:
            track = httpx.post(f"{url}/analytics/track", json={"event": "Search_Performed"})
            script = httpx.get(f"{url}/analytics/instrumentor.js")
            assert httpx.get(f"{url}/whoami").json() == {"user": None}
    assert (track.status_code, track.json()["error"]) == (503, "not_configured")
    assert script.status_code == 503
    assert "INSTRUMENTOR" not in track.text  # the reason is for the log, not the client
    assert [incident.kind for incident in captured.incidents] == ["bad_configuration"]
    assert "INSTRUMENTOR" in captured.incidents[0].message
    assert instrumentor.stats()["bad_configuration"] == 2
    captured.assert_nothing_tracked()


def test_the_urls_without_the_middleware_resolve_the_identity_themselves(
    captured: CapturedEvents,
) -> None:
    """Without the middleware the URLs resolve the identity: 202, or 401 if it cannot be bound."""
    from django.core.wsgi import get_wsgi_application

    from tests.integrations.servers import serve_wsgi

    without = [m for m in project.MIDDLEWARE if "instrumentor" not in m]
    with override_settings(MIDDLEWARE=without), serve_wsgi(get_wsgi_application()) as url:
        user = {"x-user": "usr_20", "content-type": "application/json"}
        body = b'{"event": "Search_Performed"}'
        assert httpx.post(f"{url}/analytics/track", content=body, headers=user).status_code == 202
        bad = {**user, "x-bad-traits": "1"}
        assert httpx.post(f"{url}/analytics/track", content=body, headers=bad).status_code == 401
    captured.assert_tracked(Events.SEARCH_PERFORMED, user_id="usr_20", times=1)
