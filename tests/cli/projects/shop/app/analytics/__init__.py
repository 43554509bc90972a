"""The analytics package: the plan, and the only place that may talk to SDKs."""

from app.analytics.events import Events

__all__ = ["Events"]
