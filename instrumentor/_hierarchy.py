"""The group hierarchy of a tracking plan: the levels events are grouped at, top first.

A registry declares its own with ``class Events(EventRegistry, hierarchy=("organization",
"team"))``; :data:`DEFAULT_HIERARCHY` (account > workspace > project) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from instrumentor.exceptions import PlanError, UnknownGroupLevelError

__all__ = ["DEFAULT_HIERARCHY", "GroupHierarchy"]


@dataclass(frozen=True)
class GroupHierarchy:
    """The group levels of a B2B product, from the top (the account) down.

    Args:
        levels: Level names, most general first, e.g. ``("account", "workspace", "project")``.

    Raises:
        PlanError: If there are no levels, a level repeats, or a level is not a lowercase
            identifier.
    """

    levels: tuple[str, ...]

    def __init__(self, *levels: str) -> None:
        if not levels:
            raise PlanError("a group hierarchy needs at least one level, e.g. 'account'")
        for level in levels:
            if not isinstance(level, str) or not level.isidentifier() or level != level.lower():
                raise PlanError(
                    f"group level {level!r} must be a lowercase identifier such as 'workspace'"
                )
        if len(set(levels)) != len(levels):
            raise PlanError(f"group hierarchy {levels!r} repeats a level")
        object.__setattr__(self, "levels", tuple(levels))

    @property
    def top(self) -> str:
        """The most general level (the account in the default hierarchy)."""
        return self.levels[0]

    def parent(self, level: str) -> str | None:
        """The level directly above ``level``, or ``None`` for the top level."""
        index = self.index(level)
        return self.levels[index - 1] if index else None

    def index(self, level: str) -> int:
        """The depth of ``level``: 0 for the top.

        Raises:
            UnknownGroupLevelError: If ``level`` is not part of this hierarchy.
        """
        try:
            return self.levels.index(level)
        except ValueError:
            raise UnknownGroupLevelError(
                f"unknown group level {level!r}; this hierarchy declares {' > '.join(self.levels)}"
            ) from None

    def path_to(self, level: str) -> tuple[str, ...]:
        """The levels from the top down to and including ``level``."""
        return self.levels[: self.index(level) + 1]

    def __repr__(self) -> str:
        return f"GroupHierarchy({', '.join(map(repr, self.levels))})"


#: account > workspace > project, the hierarchy used unless a registry declares its own.
DEFAULT_HIERARCHY = GroupHierarchy("account", "workspace", "project")
