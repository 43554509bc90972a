"""Billing, which defines Report_Created a second time."""

from instrumentor import EventRegistry, event


class BillingEvents(EventRegistry):
    INVOICE_PAID = event("Invoice_Paid", category="billing")
    REPORT_CREATED = event("Report_Created", category="billing")
