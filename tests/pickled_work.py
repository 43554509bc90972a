"""Module-level tracked work for the pickling test (child processes import it by name)."""

from __future__ import annotations

from instrumentor import tracks
from tests.plan import Events


@tracks(Events.PLAN_UPGRADED)
def upgrade(plan: str) -> str:
    """Runs in a worker process."""
    return plan.upper()
