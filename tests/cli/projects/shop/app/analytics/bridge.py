"""Inside the analytics package an SDK may be imported; names still come from the plan."""

import posthog

from app.analytics.events import Events


def forward(user_id: str, member: Events) -> None:
    posthog.capture(user_id, member.event_name)
