"""The tracking plan beyond the daily names: specs, the group hierarchy, categories, naming rules.

``EventRegistry`` and ``event`` are at the top level (``from instrumentor import EventRegistry,
event``); this module holds what tools and advanced plans need::

    from instrumentor.plan import GroupHierarchy, all_events, find_event

    class Events(EventRegistry, hierarchy=GroupHierarchy("account", "team")): ...
"""

from __future__ import annotations

from instrumentor._naming import (
    NAMING_RULES,
    NamingViolation,
    check_event_name,
    normalise_event_name,
)
from instrumentor._registry import (
    CATEGORIES,
    CATEGORY_ORDER,
    DEFAULT_HIERARCHY,
    EventRegistry,
    EventRouting,
    EventSpec,
    GroupHierarchy,
    all_events,
    event,
    find_event,
    plan_hierarchy,
)

__all__ = [
    "CATEGORIES",
    "CATEGORY_ORDER",
    "DEFAULT_HIERARCHY",
    "EventRegistry",
    "EventRouting",
    "EventSpec",
    "GroupHierarchy",
    "NAMING_RULES",
    "NamingViolation",
    "all_events",
    "check_event_name",
    "event",
    "find_event",
    "normalise_event_name",
    "plan_hierarchy",
]
