"""Backend routing with Flask: the page sends an event name, the server adds who did it.

Open ``/``, pick a demo user (a cookie stands in for a real login), click the button. The
browser posts ``{"event": "Filter_Applied"}`` to ``/analytics/track``; the extension resolves
the user, account and workspace from the cookie, and the server tracks the event with them.
With ``ANALYTICS_DEBUG=true`` the server prints the identify, group and track calls.

Its plan has the same event names as the FastAPI example's, so the two are never imported into
one process (names are unique process-wide); each runs on its own.
"""

from __future__ import annotations

from flask import Flask, Request, redirect, render_template, request
from werkzeug.wrappers import Response

from instrumentor import EventRegistry, event, tracks
from instrumentor.integrations import Identity
from instrumentor.integrations.flask import Analytics


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


def resolve_identity(request: Request) -> Identity | None:
    """Who is signed in: here a cookie; in a real app, the session your auth set up."""
    user = request.cookies.get("demo_user")
    if user not in USERS:
        return None
    account, workspace, name = USERS[user]
    return Identity(
        user_id=user, account_id=account, workspace_id=workspace, user_traits={"name": name}
    )


analytics = Analytics(resolver=resolve_identity, prefix="/analytics")
app = Flask(__name__)
analytics.init_app(app)


@app.get("/")
def index() -> str:
    """The page with the button."""
    return render_template("index.html", users=sorted(USERS))


@app.get("/login")
def login() -> Response:
    """The fake login: remember the demo user in a cookie and go back to the page."""
    response = redirect("/", code=303)
    response.set_cookie(
        "demo_user", request.args.get("user", "usr_1"), httponly=True, samesite="Lax"
    )
    return response


@tracks(Events.DASHBOARD_EXPORTED)
def export_dashboard() -> dict[str, str]:
    """Server-side work, tracked with the same identity the extension bound."""
    return {"exported": "dashboard.csv"}


@app.post("/dashboards/export")
def export() -> dict[str, str]:
    """A server-side action."""
    return export_dashboard()
