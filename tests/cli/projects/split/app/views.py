"""Code that uses the plan correctly."""

from app.analytics.billing import BillingEvents
from app.analytics.reports import ReportEvents


def checkout() -> None:
    BillingEvents.INVOICE_PAID.track()
    ReportEvents.REPORT_CREATED.track()
