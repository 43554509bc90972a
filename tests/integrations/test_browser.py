"""End to end in a real headless Chromium: the example apps, the JS client, a stand-in provider.

Each example app (FastAPI under uvicorn, Flask under werkzeug) runs in its own process,
delivering to Accoil's API at a :class:`~tests.fault_server.FaultServer`. The browser logs in
(a cookie), clicks the button, and
the provider must receive the identify, group and track calls with the identity the server
resolved, never anything from the browser but the event name.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from instrumentor.testing import CapturedEvents
from tests.fault_server import FaultServer
from tests.integrations.servers import App, serve, served
from tests.plan import Events
from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) or shutil.which("chromium") is None,
        reason=f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium",
    ),
]
playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)


@pytest.fixture
def provider() -> Iterator[FaultServer]:
    with FaultServer(status=202) as server:
        yield server


@pytest.fixture(params=["examples.fastapi_app", "examples.flask_app"])
def app(request: pytest.FixtureRequest, provider: FaultServer) -> Iterator[App]:
    running = App(
        request.param, ANALYTICS_API_KEY="sk_browser_test", ANALYTICS_ENDPOINT=provider.url
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def _watch(page: Any) -> tuple[list[str], list[str]]:
    """Collect console errors and uncaught page errors (unhandled rejections included)."""
    console: list[str] = []
    errors: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return console, errors


def _tracks(provider: FaultServer) -> list[dict[str, Any]]:
    return [r.json for r in provider.received() if r.path == "/v2/track"]


def test_click_tracks_with_the_server_side_identity(
    app: App, provider: FaultServer, page: Any
) -> None:
    """A click is tracked with the server's identity; the API key never reaches the page."""
    console, errors = _watch(page)
    page.goto(f"{app.url}/login?user=usr_2")
    page.click("#apply-filter")
    page.wait_for_function("document.getElementById('status').textContent === 'tracked'")
    assert provider.wait_for(4, timeout=15), provider.requests()
    track = _tracks(provider)[0]
    assert track["event"] == "Filter_Applied"
    assert track["userId"] == "usr_2"
    assert set(track) == {"userId", "event", "timestamp"}  # Accoil attributes by membership
    linked = [r.json for r in provider.received() if r.path == "/v2/group"]
    assert ("ws_2", "usr_2") in {(g["groupId"], g.get("userId")) for g in linked}
    paths = sorted(r.path for r in provider.received())
    assert paths == ["/v2/group", "/v2/group", "/v2/identify", "/v2/track"]
    identify = next(r.json for r in provider.received() if r.path == "/v2/identify")
    assert (identify["userId"], identify["groupId"]) == ("usr_2", "acc_2")
    assert console == []
    assert errors == []
    # The key went to the provider only; the page never saw it.
    assert "sk_browser_test" not in page.content()
    assert all("sk_browser_test" in r.headers["authorization"] for r in provider.received())


def test_anonymous_and_backend_only_events_are_refused_in_the_browser(
    app: App, provider: FaultServer, page: Any
) -> None:
    """track() returns false when logged out or for a backend-only event."""
    _, errors = _watch(page)
    page.goto(app.url)  # not logged in
    assert page.evaluate("instrumentor.track('Filter_Applied')") is False
    page.goto(f"{app.url}/login?user=usr_1")
    assert page.evaluate("instrumentor.track('Dashboard_Exported')") is False
    assert page.evaluate("instrumentor.track('Filter_Applied')") is True
    assert provider.wait_for(4, timeout=15)
    assert [t["event"] for t in _tracks(provider)] == ["Filter_Applied"]
    assert errors == []


def test_send_beacon_is_the_fallback_without_fetch(
    app: App, provider: FaultServer, page: Any
) -> None:
    """Without fetch the script sends with sendBeacon and the event is tracked."""
    _, errors = _watch(page)
    page.goto(f"{app.url}/login?user=usr_1")
    assert page.evaluate("window.fetch = undefined; instrumentor.track('Filter_Applied')") is True
    assert provider.wait_for(4, timeout=15)
    assert _tracks(provider)[0]["userId"] == "usr_1"
    assert errors == []


def test_track_never_throws_when_the_endpoint_is_down(app: App, page: Any) -> None:
    """With the server down or bad arguments, track() returns false and never throws."""
    console, errors = _watch(page)
    page.goto(f"{app.url}/login?user=usr_1")
    app.stop()
    assert page.evaluate("instrumentor.track('Filter_Applied')") is False
    page.click("#apply-filter")
    page.wait_for_function("document.getElementById('status').textContent === 'not tracked'")
    assert page.evaluate("instrumentor.track(undefined, {groupId: {}})") is False
    assert errors == []  # no exception, no unhandled rejection
    # Chromium itself logs the refused connection; nothing else may reach the console.
    assert all("ERR_CONNECTION_REFUSED" in text for text in console), console


@pytest.mark.parametrize("app", ["examples.flask_app"], indirect=True)
def test_the_client_can_send_a_csrf_token(app: App, provider: FaultServer, page: Any) -> None:
    """The script sends a CSRF token, from a cookie or a data attribute, in the named header."""
    _, errors = _watch(page)
    page.goto(f"{app.url}/login?user=usr_1")
    page.evaluate("document.cookie = 'csrftoken=tok%2F1; path=/'")
    load = """([attributes]) => new Promise((resolve) => {
        const script = document.createElement("script");
        script.src = "/analytics/instrumentor.js?again=" + Math.random();
        for (const [name, value] of Object.entries(attributes)) script.setAttribute(name, value);
        script.onload = resolve;
        document.head.appendChild(script);
    })"""
    for attributes, token in (
        ({"data-csrf-header": "X-CSRFToken", "data-csrf-cookie": "csrftoken"}, "tok/1"),
        ({"data-csrf-header": "X-CSRF-Token", "data-csrf-token": "from-the-page"}, "from-the-page"),
    ):
        page.evaluate(load, [attributes])
        with page.expect_request("**/analytics/track") as sent:
            assert page.evaluate("instrumentor.track('Filter_Applied')") is True
        assert sent.value.headers[attributes["data-csrf-header"].lower()] == token
    assert errors == []


def test_a_response_that_throws_resolves_to_false(app: App, page: Any) -> None:
    """An exception while reading the answer is caught too: the promise never rejects."""
    _, errors = _watch(page)
    page.goto(f"{app.url}/login?user=usr_1")
    odd = """() => {
        window.fetch = () => Promise.resolve({ get status() { throw new Error("odd"); } });
        return instrumentor.track("Filter_Applied");
    }"""
    assert page.evaluate(odd) is False
    assert errors == []


def test_a_script_served_elsewhere_needs_data_endpoint(
    app: App, provider: FaultServer, page: Any
) -> None:
    """Not at .../instrumentor.js (a bundle, a CDN): no guessing; one warning until it is set."""
    messages: list[tuple[str, str]] = []
    page.on("console", lambda msg: messages.append((msg.type, msg.text)))
    _, errors = _watch(page)
    page.goto(f"{app.url}/login?user=usr_1")
    load = """async (attributes) => {
        const text = await (await fetch("/analytics/instrumentor.js")).text();
        const script = document.createElement("script");
        script.src = URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
        for (const [name, value] of Object.entries(attributes)) script.setAttribute(name, value);
        const loaded = new Promise((resolve) => { script.onload = resolve; });
        document.head.appendChild(script);
        await loaded;
        return instrumentor.endpoint;
    }"""
    assert page.evaluate(load, {}) is None
    assert page.evaluate("instrumentor.track('Filter_Applied')") is False
    assert page.evaluate("instrumentor.track('Filter_Applied')") is False
    warnings = [text for kind, text in messages if kind == "warning"]
    assert len(warnings) == 1
    assert "data-endpoint" in warnings[0]
    assert page.evaluate(load, {"data-endpoint": "/analytics/track"}) == "/analytics/track"
    assert page.evaluate("instrumentor.track('Filter_Applied')") is True
    assert provider.wait_for(4, timeout=15)
    assert [t["event"] for t in _tracks(provider)] == ["Filter_Applied"]
    assert errors == []


@pytest.mark.parametrize("path", ["/page", "/cookie-page"])
def test_django_csrf_true_works_with_the_documented_page(
    page: Any, captured: CapturedEvents, path: str
) -> None:
    """Django's real CsrfViewMiddleware, "CSRF": True, the script tags of the docs."""
    from django.test import override_settings

    from tests.integrations.django_project import settings as project
    from tests.integrations.django_project import views

    docs = (ROOT / "docs" / "backend-routing.md").read_text(encoding="utf-8")
    assert views.SCRIPT_WITH_TOKEN in docs
    assert views.SCRIPT_WITH_COOKIE in docs
    _, errors = _watch(page)
    page.set_extra_http_headers({"x-user": "usr_1"})  # the test project's login
    csrf = override_settings(INSTRUMENTOR={**project.INSTRUMENTOR, "CSRF": True})
    with csrf, served("django-wsgi") as server:
        page.goto(f"{server.url}{path}")
        assert page.evaluate("instrumentor.track('Search_Performed')") is True
        page.goto(f"{server.url}/page?bare=1")  # no token sent: Django's check refuses it
        with page.expect_response("**/analytics/track") as refused:
            assert page.evaluate("instrumentor.track('Search_Performed')") is False
        assert refused.value.status == 403
    captured.assert_tracked(Events.SEARCH_PERFORMED, user_id="usr_1", times=1)
    assert errors == []


async def _front_page(request: Any) -> Any:
    from starlette.responses import HTMLResponse

    return HTMLResponse("<!doctype html><title>another origin</title><p>front</p>")


_CROSS_ORIGIN_POST = """async (url) => {
    try {
        const response = await fetch(url, {
            method: "POST",
            credentials: "include",
            headers: { "Content-Type": "application/json", "X-User": "usr_9" },
            body: JSON.stringify({ event: "Search_Performed" }),
        });
        return response.status;
    } catch (error) {
        return String(error);
    }
}"""


@pytest.mark.parametrize("kind", ["fastapi", "flask"])
def test_a_page_on_another_origin_tracks_only_when_allowed(
    page: Any, captured: CapturedEvents, kind: str
) -> None:
    """Another loopback port is another origin: allowed, its fetch is tracked; else it fails."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    console, errors = _watch(page)
    with serve(Starlette(routes=[Route("/", _front_page)])) as front:
        page.goto(f"{front}/")
        with served(kind, allow_origin=[front]) as server:
            status = page.evaluate(_CROSS_ORIGIN_POST, f"{server.url}/analytics/track")
            assert status == 202
        captured.assert_tracked(Events.SEARCH_PERFORMED, user_id="usr_9", times=1)
        with served(kind) as server:  # the default: the app's own origin only
            failed = page.evaluate(_CROSS_ORIGIN_POST, f"{server.url}/analytics/track")
            assert "Failed to fetch" in str(failed), failed
        captured.assert_tracked(Events.SEARCH_PERFORMED, times=1)  # nothing more
    assert errors == []
    assert any("Access-Control-Allow-Origin" in text for text in console), console
