"""instrumentor's own calls: the good pattern, an inline name, dynamic names, unknown members."""

import instrumentor
from instrumentor import track, tracks

from app.analytics import Events


@tracks(Events.REPORT_CREATED)
def create_report(title: str) -> str:
    return title


def share_report(kind: str) -> None:
    track("Report_Shared")
    instrumentor.track(f"Report_{kind}")
    Events.REPORT_CRATED.track()


@tracks("Plan_Upgraded")
def upgrade() -> None:
    Events.TEAMMATE_INVITED.track()
