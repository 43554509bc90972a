"""PostHog: a client instance, both capture signatures, and an unresolved client."""

from typing import Any

from posthog import Posthog

ph = Posthog("phc_key", host="https://eu.posthog.com")


def on_share(user_id: str, page: str) -> None:
    ph.capture(user_id, "Report Shared")
    ph.capture("Search_Performed", distinct_id=user_id)
    ph.capture(user_id, "%s_Viewed" % page)


def on_click(client: Any, user_id: str) -> None:
    client.capture(user_id, "Button_Clicked")
