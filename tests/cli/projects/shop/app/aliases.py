"""The registry reached through aliases, a module, subscripts and by_name."""

import app.analytics.events as plan_module
from app.analytics import Events as E


def handle(kind: str) -> object:
    E.REPORT_SHARED.track()
    E.REPORT_SHRED.track()
    plan_module.Events.TEAMMATE_INVITD.track()
    E["PLAN_UPGRADED"].track()
    E.by_name("Webhook_Received")
    return E.by_name("Webhook_Recieved")
