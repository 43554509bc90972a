"""Reports."""

from instrumentor import EventRegistry, event


class ReportEvents(EventRegistry):
    REPORT_CREATED = event("Report_Created", category="core_value", group_level="project")
