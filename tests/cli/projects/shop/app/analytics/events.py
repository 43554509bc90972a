"""The shop's tracking plan."""

from instrumentor import EventRegistry, event


class Events(EventRegistry):
    REPORT_CREATED = event("Report_Created", category="core_value", group_level="project")
    REPORT_SHARED = event("Report_Shared", category="collaboration", group_level="project")
    TEAMMATE_INVITED = event("Teammate_Invited", category="collaboration")
    PLAN_UPGRADED = event("Plan_Upgraded", category="billing")
    WEBHOOK_RECEIVED = event("Webhook_Received", category="feature_usage")
    SEARCH_PERFORMED = event("Search_Performed", category="feature_usage")
    INVOICE_PAID = event("Invoice_Paid", category="billing")
    EXPORT_SCHEDULED = event("Export_Scheduled", category="feature_usage")  # instrumentor: ignore[unused-event] -- shipped with the exports page in Q3
