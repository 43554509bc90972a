"""Backend routing with FastAPI: the page sends an event name, the server adds who did it.

Open ``/``, pick a demo user (a cookie stands in for a real login), click the button. The
browser posts ``{"event": "Filter_Applied"}`` to ``/analytics/track``; the middleware resolves
the user, account and workspace from the cookie, and the server tracks the event with them.
With ``ANALYTICS_DEBUG=true`` the server prints the identify, group and track calls.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from instrumentor import EventRegistry, event, tracks
from instrumentor.integrations import Identity, TrackEndpoint
from instrumentor.integrations.asgi import AnalyticsMiddleware


class Events(EventRegistry):
    """The plan of this example: one event the browser may send, one only the server does."""

    FILTER_APPLIED = event(
        "Filter_Applied",
        category="feature_usage",
        group_level="workspace",
        frontend=True,
        description="A user applied a filter on the dashboard (sent by the browser).",
    )
    DASHBOARD_EXPORTED = event(
        "Dashboard_Exported",
        category="core_value",
        group_level="workspace",
        description="A user exported a dashboard (tracked by the server only).",
    )


#: The demo's "database": user id -> (account id, workspace id, name).
USERS = {
    "usr_1": ("acc_1", "ws_1", "Ada"),
    "usr_2": ("acc_2", "ws_2", "Grace"),
}
PAGE = Path(__file__).with_name("index.html")


def resolve_identity(request: Request) -> Identity | None:
    """Who is signed in: here a cookie; in a real app, the session your auth set up."""
    user = request.cookies.get("demo_user")
    if user not in USERS:
        return None
    account, workspace, name = USERS[user]
    return Identity(
        user_id=user, account_id=account, workspace_id=workspace, user_traits={"name": name}
    )


app = FastAPI(title="instrumentor backend routing example")
app.add_middleware(
    AnalyticsMiddleware, resolver=resolve_identity, endpoint=TrackEndpoint(prefix="/analytics")
)


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    """The page with the button."""
    return PAGE.read_text(encoding="utf-8")


@app.get("/login")
async def login(user: str = "usr_1") -> RedirectResponse:
    """The fake login: remember the demo user in a cookie and go back to the page."""
    response = RedirectResponse("/", status_code=303)
    response.set_cookie("demo_user", user, httponly=True, samesite="lax")
    return response


@tracks(Events.DASHBOARD_EXPORTED)
def export_dashboard() -> dict[str, str]:
    """Server-side work, tracked with the same identity the middleware bound."""
    return {"exported": "dashboard.csv"}


@app.post("/dashboards/export")
def export() -> dict[str, str]:
    """A server-side action (a sync view: the identity reaches it through the thread pool)."""
    return export_dashboard()
