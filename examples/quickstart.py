"""The instrumentor quickstart: a tracking plan, a request scope and two tracked actions.

Run it with the debug console on to see exactly what would be sent:

    ANALYTICS_DEBUG=true python examples/quickstart.py

Nothing here needs a network or an API key: with ANALYTICS_DEBUG=true every message is printed
to standard error instead of being sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from instrumentor import EventRegistry, bound_context, event, stats, tracks


class Events(EventRegistry):
    """THE tracking plan: every event defined exactly once."""

    REPORT_CREATED = event(
        "Report_Created",
        category="core_value",
        group_level="project",
        description="A user created a report in a project.",
    )
    TEAMMATE_INVITED = event(
        "Teammate_Invited",
        category="collaboration",
        group_level="workspace",
        description="A user invited someone to a workspace.",
    )


@dataclass
class Report:
    """What the business code returns."""

    id: int
    title: str


@tracks(Events.REPORT_CREATED)
def create_report(title: str) -> Report:
    """Business code: fires Report_Created after it returns successfully."""
    return Report(id=1, title=title)


@tracks(Events.TEAMMATE_INVITED)
async def invite_teammate(email: str) -> str:
    """Async business code: fires after the await completes."""
    await asyncio.sleep(0)
    return email


def handle_request() -> None:
    """What framework middleware does once per request: bind who is acting, then run the view."""
    with bound_context(
        user_id="usr_123",
        user_traits={"email": "jane@example.com"},
        account_id="acc_456",
        account_name="Acme Corp",
        workspace_id="ws_789",
        workspace_name="Research",
        project_id="proj_42",
        project_name="Q3 Reports",
    ):
        create_report("Quarterly revenue")
        create_report("Churn by cohort")  # identify and groups are not re-sent
        asyncio.run(invite_teammate("sam@example.com"))


if __name__ == "__main__":
    handle_request()
    print(f"done; incidents: {dict(stats()) or 'none'}")
