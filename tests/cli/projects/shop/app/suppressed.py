"""Suppressions: with a reason, without one, one that silences nothing, an unknown rule."""

import analytics  # instrumentor: ignore[direct-sdk-import] -- the legacy webhook, removed in Q3


def legacy(user_id: str) -> None:
    analytics.track(user_id, "Webhook_Received")  # instrumentor: ignore[inline-event-name] -- replayed by the legacy webhook
    analytics.track(user_id, "Legacy_Synced")  # instrumentor: ignore[inline-event-name]
    print("no finding here")  # instrumentor: ignore[dynamic-event-name] -- stale
    print("nothing")  # instrumentor: ignore[inline-event-nam] -- a typo in the rule id
