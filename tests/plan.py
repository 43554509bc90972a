"""The tracking plan the test suite shares (registries are process-wide, so define it once)."""

from __future__ import annotations

from instrumentor import EventRegistry, event


class Events(EventRegistry):
    """A small B2B plan over the default account > workspace > project hierarchy."""

    REPORT_CREATED = event(
        "Report_Created",
        category="core_value",
        group_level="project",
        description="A user created a report.",
    )
    SEARCH_PERFORMED = event("Search_Performed", category="feature_usage", frontend=True)
    WORKSPACE_SETTINGS_UPDATED = event(
        "Workspace_Settings_Updated", category="configuration", group_level="workspace"
    )
    PLAN_UPGRADED = event("Plan_Upgraded", category="billing", group_level="account")
    REPORT_EXPORTED = event(
        "Report_Exported",
        category="feature_usage",
        group_level="project",
        deprecated="exports are tracked as Report_Shared now",
        replaced_by="Report_Shared",
        sunset="2027-06-30",
    )


class OrgEvents(EventRegistry, hierarchy=("organization", "team")):
    """A plan over a custom hierarchy."""

    TEAM_JOINED = event("Team_Joined", category="collaboration", group_level="team")
    ORGANIZATION_CREATED = event("Organization_Created", category="lifecycle")
