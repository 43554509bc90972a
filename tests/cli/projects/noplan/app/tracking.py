"""The analytics package (a module here): it may import the SDK."""

import posthog


def capture(user_id: str, name: str) -> None:
    posthog.capture(user_id, "Page_Viewed")
