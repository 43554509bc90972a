"""The plan as plain data, in the shape of Accoil's tracking-plan file.

Every export format and the lock file are made from :func:`plan_document`, so they never
disagree::

    {"version": 1,
     "group_hierarchy": [{"level": "account", "parent": null}, ...],
     "events": [{"name": "Report_Created", "category": "core_value",
                 "group_level": "project", "description": "...", "frontend": false,
                 "deprecated": null, ...}, ...]}
"""

from __future__ import annotations

from typing import Any

from instrumentor._registry import EventRegistry
from instrumentor.cli._source import Plan

__all__ = ["DOCUMENT_VERSION", "event_document", "plan_document"]

#: Bumped when the shape of the document changes incompatibly.
DOCUMENT_VERSION = 1


def event_document(member: EventRegistry) -> dict[str, Any]:
    """One event as plain data: name, category, group level, description and lifecycle."""
    spec = member.spec
    return {
        "name": spec.name,
        "category": spec.category,
        "group_level": member.group_level,
        "description": spec.description,
        "frontend": spec.frontend,
        "deprecated": spec.deprecated,
        "replaced_by": spec.replaced_by,
        "sunset": spec.sunset.isoformat() if spec.sunset else None,
        "waivers": dict(spec.waivers),
        "registry": f"{type(member).__module__}.{type(member).__qualname__}",
        "member": member.name,
    }


def plan_document(plan: Plan) -> dict[str, Any]:
    """The whole plan as plain data (JSON- and YAML-ready), events in definition order."""
    hierarchy = plan.hierarchy
    return {
        "version": DOCUMENT_VERSION,
        "group_hierarchy": [
            {"level": level, "parent": hierarchy.parent(level)} for level in hierarchy.levels
        ],
        "events": [event_document(member) for member in plan.events],
    }
