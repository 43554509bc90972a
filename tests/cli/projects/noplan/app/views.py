"""Views that track around the (missing) plan."""

import posthog

from app.events import Events


def view(user_id: str, page: str) -> None:
    posthog.capture(user_id, f"{page}_Viewed")
    Events.NOT_CHECKED_WITHOUT_A_PLAN.track()
