"""Segment, under its old name and its new one."""

import analytics
import segment.analytics as segment_analytics


def on_order(user_id: str, kind: str) -> None:
    analytics.track(user_id, "Order_Completed")
    analytics.track(user_id=user_id, event="Report_" + kind)
    segment_analytics.track(user_id, "report created")
