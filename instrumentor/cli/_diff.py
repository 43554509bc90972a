"""The lock file's content, and which changes between a lock and the plan break consumers.

Breaking (the data already collected, dashboards, or the browser stop matching what is sent):

- an event removed, or renamed (the same registry member with another name, or replaced by the
  event its ``replaced_by`` named);
- an event's group level changed (its track carries another group's id);
- an event no longer allowed from the browser (``frontend`` turned off): the browser client
  would keep sending it and the backend endpoint would refuse it, so it is lost silently;
- the group hierarchy changed.

Not breaking: added events, category, description, deprecation (reason, replacement, sunset),
waivers, ``frontend`` turned on, and an event moved to another registry or member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LOCK_VERSION", "Change", "classify", "lock_content"]

#: Bumped when the shape of the lock file changes incompatibly.
LOCK_VERSION = 1

Event = Mapping[str, Any]


@dataclass(frozen=True)
class Change:
    """One difference between the lock and the plan.

    Attributes:
        kind: A stable id, e.g. ``event_removed``, ``group_level_changed``.
        event: The event's name in the lock (``""`` for the hierarchy).
        message: What changed, for people.
        breaking: Whether it breaks consumers of the data (see the module docstring).
    """

    kind: str
    event: str
    message: str
    breaking: bool


def lock_content(document: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's part of a lock file: the hierarchy and the events, sorted by name.

    Sorting keeps the lock's diff small when definitions move around in the code.
    """
    return {
        "lock_version": LOCK_VERSION,
        "group_hierarchy": [dict(entry) for entry in document["group_hierarchy"]],
        "events": sorted((dict(e) for e in document["events"]), key=lambda e: e["name"]),
    }


def _hierarchy(content: Mapping[str, Any]) -> str:
    return " > ".join(entry["level"] for entry in content["group_hierarchy"])


def _where(event: Event) -> str:
    return f"{event.get('registry', '?')}.{event.get('member', '?')}"


def _rename_target(old: Event, added: list[Event]) -> Event | None:
    """The added event that ``old`` became: the same member, else its named replacement."""
    same_place = [e for e in added if _where(e) == _where(old)]
    same_member = [e for e in added if e.get("member") == old.get("member")]
    replacement = [e for e in added if e["name"] == old.get("replaced_by")]
    for found in (same_place, same_member, replacement):
        if len(found) == 1:
            return found[0]
    return None


def _deprecation(event: Event) -> tuple[Any, Any, Any]:
    return event.get("deprecated"), event.get("replaced_by"), event.get("sunset")


def _compare(old: Event, new: Event) -> list[Change]:
    name, changes = old["name"], []
    replaced = new["name"] == old.get("replaced_by")  # its deprecation led here: not news
    if old.get("group_level") != new.get("group_level"):
        changes.append(
            Change(
                "group_level_changed",
                name,
                f"{new['name']}: group level {old.get('group_level')} -> {new.get('group_level')}",
                True,
            )
        )
    if bool(old.get("frontend")) != bool(new.get("frontend")):
        removed = bool(old.get("frontend"))
        changes.append(
            Change(
                "frontend_removed" if removed else "frontend_added",
                name,
                f"{new['name']}: {'no longer' if removed else 'now'} allowed from the browser",
                removed,
            )
        )
    if old.get("category") != new.get("category"):
        changes.append(
            Change(
                "category_changed",
                name,
                f"{new['name']}: category {old.get('category')} -> {new.get('category')}",
                False,
            )
        )
    if old.get("description") != new.get("description"):
        changes.append(
            Change("description_changed", name, f"{new['name']}: description changed", False)
        )
    if _deprecation(old) != _deprecation(new) and not replaced:
        if new.get("deprecated") is None:
            what = "no longer deprecated"
        elif old.get("deprecated") is None:
            what = f"deprecated ({new['deprecated']})"
        else:
            what = "deprecation changed (reason, replacement or sunset)"
        changes.append(Change("deprecation_changed", name, f"{new['name']}: {what}", False))
    if dict(old.get("waivers") or {}) != dict(new.get("waivers") or {}):
        changes.append(
            Change("waivers_changed", name, f"{new['name']}: naming waivers changed", False)
        )
    if name == new["name"] and _where(old) != _where(new):
        changes.append(
            Change(
                "event_moved",
                name,
                f"{name}: defined by {_where(new)} (was {_where(old)})",
                False,
            )
        )
    return changes


def classify(lock: Mapping[str, Any], plan: Mapping[str, Any]) -> list[Change]:
    """Every change from ``lock`` to ``plan`` (both as :func:`lock_content`), breaking first."""
    changes: list[Change] = []
    old_levels, new_levels = lock["group_hierarchy"], plan["group_hierarchy"]
    if old_levels != new_levels:
        # A new level below the others changes no existing level's parent: not breaking.
        extended = new_levels[: len(old_levels)] == old_levels
        changes.append(
            Change(
                "hierarchy_extended" if extended else "hierarchy_changed",
                "",
                f"group hierarchy {_hierarchy(lock)} -> {_hierarchy(plan)}",
                not extended,
            )
        )
    before = {e["name"]: e for e in lock["events"]}
    after = {e["name"]: e for e in plan["events"]}
    added = [e for name, e in after.items() if name not in before]
    for name, old in before.items():
        if name in after:
            changes.extend(_compare(old, after[name]))
            continue
        target = _rename_target(old, added)
        if target is None:
            replacement = old.get("replaced_by")
            note = f" (its replacement {replacement} stays)" if replacement in after else ""
            changes.append(Change("event_removed", name, f"{name}: removed{note}", True))
            continue
        added.remove(target)
        changes.append(Change("event_renamed", name, f"{name}: renamed to {target['name']}", True))
        changes.extend(_compare(old, target))
    changes.extend(
        Change(
            "event_added",
            e["name"],
            f"{e['name']}: added ({e.get('category')}, {e.get('group_level')} level)",
            False,
        )
        for e in added
    )
    return sorted(changes, key=lambda c: not c.breaking)
