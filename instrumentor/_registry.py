"""The tracking plan: an Enum-based registry where every event is defined exactly once.

.. code-block:: python

    class Events(EventRegistry):
        REPORT_CREATED = event("Report_Created", category="core_value", group_level="project",
                               description="A user created a report.")

Every mistake in a plan is raised while the class is created, i.e. at import: duplicate and
near-duplicate names (within the class and across every registry in the process, naming both
definition sites), names breaking the naming rules, unknown categories and group levels, waivers
without reasons.
"""

from __future__ import annotations

import datetime as _dt
import enum
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, Union

from instrumentor._hierarchy import DEFAULT_HIERARCHY, GroupHierarchy
from instrumentor._naming import NAMING_RULES, check_event_name, normalise_event_name
from instrumentor.exceptions import (
    DuplicateEventError,
    NamingRuleError,
    PlanError,
    UnknownCategoryError,
    UnknownGroupLevelError,
    WaiverError,
)

#: Event properties: a mapping of JSON-compatible values (normalised when sent), or ``None``.
PropertiesArg = Union[Mapping[str, Any], None]

__all__ = [
    "CATEGORIES",
    "CATEGORY_ORDER",
    "DEFAULT_HIERARCHY",
    "EventRegistry",
    "EventRouting",
    "EventSpec",
    "GroupHierarchy",
    "PropertiesArg",
    "all_events",
    "event",
    "find_event",
    "forget_registry",
    "plan_hierarchy",
    "set_tracker",
]

#: The eight event categories of the tracking plan, in the order a plan is read (exports use it).
CATEGORY_ORDER: tuple[str, ...] = (
    "lifecycle",
    "core_value",
    "collaboration",
    "configuration",
    "billing",
    "feature_usage",
    "errors",
    "navigation",
)
#: The eight event categories of the tracking plan.
CATEGORIES: frozenset[str] = frozenset(CATEGORY_ORDER)


@dataclass(frozen=True)
class EventSpec:
    """Everything the plan says about one event. Created by :func:`event`, never directly.

    Attributes:
        name: The event name sent to the provider, e.g. ``"Report_Created"``.
        category: One of :data:`CATEGORIES`.
        group_level: The level whose group id every track of this event carries; ``None``
            until the registry resolves it to its hierarchy's top level.
        description: What the event means, for the plan's readers.
        frontend: Whether the browser may send this event through the backend endpoint.
        deprecated: Why the event is deprecated, or ``None``.
        replaced_by: The name of the event that replaces a deprecated one.
        sunset: The date after which a deprecated event should be gone.
        waivers: Naming rules waived for this event, each with its written reason.
        defined_at: ``file:line`` of the definition, for error messages.
    """

    name: str
    category: str
    group_level: str | None = None
    description: str = ""
    frontend: bool = False
    deprecated: str | None = None
    replaced_by: str | None = None
    sunset: _dt.date | None = None
    waivers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    defined_at: str = "<unknown>"

    def __hash__(self) -> int:
        return hash((self.name, self.defined_at))


def event(
    name: str,
    *,
    category: str,
    group_level: str | None = None,
    description: str = "",
    frontend: bool = False,
    deprecated: str | None = None,
    replaced_by: str | None = None,
    sunset: _dt.date | str | None = None,
    waive: Mapping[str, str] | None = None,
) -> EventSpec:
    """Define one event of the tracking plan, as a member of an :class:`EventRegistry`.

    Args:
        name: The name sent to the provider; ``Object_Action`` in Title_Case, past tense.
        category: One of :data:`CATEGORIES`, e.g. ``"core_value"``.
        group_level: The hierarchy level the event belongs to (``"account"``,
            ``"workspace"``, ``"project"`` by default); defaults to the top level.
        description: What the event means, for whoever reads the plan.
        frontend: Allow the browser to send this event through the backend endpoint.
        deprecated: Mark the event deprecated, saying why; tracking it still sends it, logs a
            warning (once per event, then at most once a minute) and counts a
            ``deprecated_event``.
        replaced_by: The event name that replaces a deprecated one.
        sunset: When a deprecated event should be removed (a date or ISO date string).
        waive: Naming rules to waive for this event, each mapped to the written reason.

    Returns:
        The event's spec; the registry turns it into an Enum member.
    """
    frame = sys._getframe(1)
    defined_at = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    if isinstance(sunset, str):
        try:
            sunset = _dt.date.fromisoformat(sunset)
        except ValueError:
            raise PlanError(
                f"event {name!r} at {defined_at}: sunset {sunset!r} is not an ISO date (YYYY-MM-DD)"
            ) from None
    return EventSpec(
        name=name,
        category=category,
        group_level=group_level,
        description=description,
        frontend=frontend,
        deprecated=deprecated,
        replaced_by=replaced_by,
        sunset=sunset,
        waivers=MappingProxyType(dict(waive or {})),
        defined_at=defined_at,
    )


class _Catalog:
    """Every event of every registry in the process, keyed by its normalised name.

    ``origins`` holds, under the same key as ``by_key``, the (module, class qualname,
    attribute) that defined the event: only that place may define the name again (a reload).
    """

    def __init__(self) -> None:
        self.by_key: dict[str, EventRegistry] = {}
        self.origins: dict[str, tuple[str, str, str]] = {}
        self.by_name: dict[str, EventRegistry] = {}
        self.registries: list[type[EventRegistry]] = []
        self.lock = threading.Lock()


_catalog = _Catalog()


def _validate_spec(owner: str, attr: str, spec: EventSpec, hierarchy: GroupHierarchy) -> EventSpec:
    where = f"{owner}.{attr} ({spec.defined_at})"
    if not isinstance(spec.name, str):
        raise NamingRuleError(f"{where}: the event name must be a string, got {spec.name!r}")
    if spec.category not in CATEGORIES:
        raise UnknownCategoryError(
            f"{where}: unknown category {spec.category!r}; use one of {sorted(CATEGORIES)}"
        )
    level = spec.group_level if spec.group_level is not None else hierarchy.top
    if level not in hierarchy.levels:
        raise UnknownGroupLevelError(
            f"{where}: unknown group level {level!r}; the registry's hierarchy is "
            f"{' > '.join(hierarchy.levels)} (declare another with "
            f"`class {owner}(EventRegistry, hierarchy=(...))`)"
        )
    for rule, reason in spec.waivers.items():
        if rule not in NAMING_RULES:
            raise WaiverError(f"{where}: unknown rule {rule!r}; rules: {sorted(NAMING_RULES)}")
        if not isinstance(reason, str) or not reason.strip():
            raise WaiverError(f"{where}: waiving {rule!r} needs a written reason")
    violations = [v for v in check_event_name(spec.name) if v.rule not in spec.waivers]
    if violations:
        details = "; ".join(f"[{v.rule}] {v.message}" for v in violations)
        raise NamingRuleError(
            f"{where}: {details}. Rename the event, or waive a rule with "
            f"event(..., waive={{{violations[0].rule!r}: 'why'}})"
        )
    if spec.deprecated is not None and not spec.deprecated.strip():
        raise PlanError(f"{where}: deprecated= needs a reason, e.g. 'use Report_Built'")
    if spec.group_level == level:
        return spec
    return EventSpec(**{**spec.__dict__, "group_level": level})


def _duplicate(existing: EventSpec, first: str, spec: EventSpec) -> DuplicateEventError:
    if existing.name != spec.name:  # a near-duplicate: name the spelling the plan already has
        return DuplicateEventError(
            f"near-duplicate event name {spec.name!r} at {spec.defined_at} is too close to "
            f"{existing.name!r}, defined at {first}. Names that differ only in case, '_', '-', "
            f"'.' or spaces are one event: use {existing.name!r} or a clearly different name."
        )
    return DuplicateEventError(
        f"duplicate event name {spec.name!r}: defined at {first} and again at {spec.defined_at}"
        ". Define every event exactly once and import the registry where you need it."
    )


class EventRouting(NamedTuple):
    """What the emitter needs of an event on every call, computed once when the plan is defined.

    Attributes:
        spec: The event's definition.
        name: The event name sent.
        level: The group level of its tracks.
        top: The top level of its hierarchy (the account).
        top_level: Whether ``level`` is the top.
        deprecated: Whether the event is deprecated.
        path_key: One string per hierarchy path to ``level``, so cached bundle verdicts never
            mix hierarchies.
    """

    spec: EventSpec
    name: str
    level: str
    top: str
    top_level: bool
    deprecated: bool
    path_key: str


def _routing(spec: EventSpec, hierarchy: GroupHierarchy) -> EventRouting:
    level = spec.group_level
    assert level is not None  # resolved before the members are made
    return EventRouting(
        spec,
        spec.name,
        level,
        hierarchy.top,
        level == hierarchy.top,
        spec.deprecated is not None,
        ">".join(hierarchy.path_to(level)),
    )


#: Called by ``Events.X.track()``: the emitter registers its ``track`` at import (it sits on a
#: higher layer, so the registry may not import it).
_tracker: Callable[..., None] | None = None


def set_tracker(tracker: Callable[..., None]) -> None:
    """Register the function ``Events.X.track()`` calls (the emitter's :func:`track`)."""
    global _tracker
    _tracker = tracker


def _resolve_hierarchy(
    declared: GroupHierarchy | tuple[str, ...] | None, bases: tuple[type, ...]
) -> GroupHierarchy:
    """A registry's hierarchy: the one it declares, else a base registry's, else the default."""
    if isinstance(declared, GroupHierarchy):
        return declared
    if declared is not None:
        return GroupHierarchy(*declared)
    for base in bases:
        inherited = getattr(base, "hierarchy", None)
        if isinstance(inherited, GroupHierarchy):
            return inherited
    return DEFAULT_HIERARCHY


def _collect_specs(
    cls_name: str, classdict: Any, hierarchy: GroupHierarchy
) -> dict[str, EventSpec]:
    """The validated event specs of a registry's body; any other public value is a mistake."""
    specs: dict[str, EventSpec] = {}
    for attr in list(classdict.keys()):
        value = classdict[attr]
        if isinstance(value, EventSpec):
            specs[attr] = _validate_spec(cls_name, attr, value, hierarchy)
        elif not (
            attr.startswith("_")
            or attr == "hierarchy"
            or callable(value)
            or hasattr(value, "__get__")
        ):
            raise PlanError(
                f"{cls_name}.{attr}: every member of a registry is defined with "
                f"event(...), got {value!r}"
            )
    return specs


def _check_within(qualname: str, specs: Mapping[str, EventSpec]) -> None:
    """Refuse two events of one registry whose names are the same once normalised."""
    seen: dict[str, tuple[str, EventSpec]] = {}
    for attr, spec in specs.items():
        key = normalise_event_name(spec.name)
        if key in seen:
            first_attr, first = seen[key]
            raise _duplicate(first, f"{qualname}.{first_attr} ({first.defined_at})", spec)
        seen[key] = (attr, spec)


def _check_across(specs: Mapping[str, EventSpec], module: str, qualname: str) -> None:
    """Refuse a name an event of the catalog already has, unless redefined in its place.

    Only the same module, class and attribute may define a name again (a reload of the
    module); a spec object reused elsewhere, or a factory minting classes at one line, is a
    duplicate. The caller holds the catalog's lock.
    """
    for attr, spec in specs.items():
        key = normalise_event_name(spec.name)
        other = _catalog.by_key.get(key)
        if other is None:
            continue
        if (
            "<locals>" not in qualname
            and _catalog.origins[key] == (module, qualname, attr)
            and other.spec.defined_at == spec.defined_at
        ):
            continue
        first = f"{type(other).__qualname__}.{other.name} ({other.spec.defined_at})"
        raise _duplicate(other.spec, first, spec)


def _record(cls: Any, module: str, qualname: str, hierarchy: GroupHierarchy) -> None:
    """Enter a new registry's members in the catalog, with their routing; the lock is held."""
    for member in cls:
        key = normalise_event_name(member.event_name)
        _catalog.by_key[key] = member
        _catalog.origins[key] = (module, qualname, member.name)
        _catalog.by_name[member.event_name] = member
        member.routing = _routing(member.spec, hierarchy)


class _RegistryMeta(enum.EnumMeta):
    """Validates a registry before it exists and records it in the process-wide catalog."""

    def __new__(
        mcls,
        cls_name: str,
        bases: tuple[type, ...],
        classdict: Any,
        *,
        hierarchy: GroupHierarchy | tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> _RegistryMeta:
        resolved = _resolve_hierarchy(hierarchy, bases)
        specs = _collect_specs(cls_name, classdict, resolved)
        module = classdict.get("__module__", "?")
        qualname = classdict.get("__qualname__", cls_name)
        _check_within(qualname, specs)
        with _catalog.lock:
            _check_across(specs, module, qualname)
            for attr, spec in specs.items():
                # Enum's private dict refuses re-assignment; replace through dict.__setitem__.
                dict.__setitem__(classdict, attr, spec)
            cls = super().__new__(mcls, cls_name, bases, classdict, **kwargs)
            type.__setattr__(cls, "hierarchy", resolved)
            _record(cls, module, qualname, resolved)
            if specs:
                _catalog.registries.append(cls)  # type: ignore[arg-type]
        return cls


class EventRegistry(enum.Enum, metaclass=_RegistryMeta):
    """Base class of a tracking plan. Each member is one event, defined with :func:`event`.

    Declare another group hierarchy with a class keyword::

        class Events(EventRegistry, hierarchy=("organization", "team")): ...

    Members are the handles the rest of the API takes: ``@tracks(Events.X)``,
    ``track(Events.X)`` or ``Events.X.track()``.
    """

    hierarchy: ClassVar[GroupHierarchy]
    #: What the emitter reads on every call, precomputed at definition (see :class:`EventRouting`).
    routing: EventRouting

    @property
    def spec(self) -> EventSpec:
        """The full definition of this event."""
        spec: EventSpec = self._value_
        return spec

    @property
    def event_name(self) -> str:
        """The name sent to the provider, e.g. ``"Report_Created"``."""
        return self.spec.name

    @property
    def category(self) -> str:
        """The event's category."""
        return self.spec.category

    @property
    def group_level(self) -> str:
        """The hierarchy level whose group id every track of this event carries."""
        level = self.spec.group_level
        assert level is not None  # resolved by the metaclass
        return level

    @property
    def description(self) -> str:
        """What the event means."""
        return self.spec.description

    @property
    def frontend(self) -> bool:
        """Whether the browser may send this event through the backend endpoint."""
        return self.spec.frontend

    @classmethod
    def by_name(cls, name: str) -> EventRegistry | None:
        """The member whose event name is ``name`` exactly, or ``None``."""
        member = _catalog.by_name.get(name)
        return member if isinstance(member, cls) else None

    def track(
        self,
        *,
        group_id: str | int | None = None,
        properties: PropertiesArg = None,
    ) -> None:
        """Track this event now, with the current context. Never raises (but in strict mode).

        Args:
            group_id: The group id for the event's level, when the context does not hold it.
            properties: Event properties, for providers that accept them.
        """
        tracker = _tracker
        if tracker is not None:  # always set: importing instrumentor imports the emitter
            try:  # noqa: SIM105 - suppress() is a call, which fails at the recursion limit too
                tracker(self, group_id=group_id, properties=properties)
            except RecursionError:  # calling it at the recursion limit: the event is lost
                pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name_}: {self._value_.name!r}>"

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # By reference, like any Enum member reached through its class: Celery arguments,
        # multiprocessing and caches get the very same member back.
        return getattr, (type(self), self._name_)


def all_events() -> Iterator[EventRegistry]:
    """Every event of every registry defined in this process, in definition order."""
    for registry in list(_catalog.registries):
        yield from registry


def plan_hierarchy() -> GroupHierarchy:
    """The hierarchy of the plan: the one every registry shares, else the default.

    ``identify()``, ``group()`` and ``establish_group_hierarchy()`` use it when not told
    otherwise, so a plan declared over ``organization > team`` needs no repetition.
    """
    hierarchies = {registry.hierarchy for registry in _catalog.registries}
    return hierarchies.pop() if len(hierarchies) == 1 else DEFAULT_HIERARCHY


def find_event(name: str) -> EventRegistry | None:
    """The event whose name is exactly ``name`` in any registry, or ``None``."""
    return _catalog.by_name.get(name)


def forget_registry(registry: type[EventRegistry]) -> None:
    """Remove a registry from the process-wide duplicate check (tests and reloads).

    For tests that define throwaway plans: after this, another registry may reuse its names.
    """
    with _catalog.lock:
        if registry in _catalog.registries:
            _catalog.registries.remove(registry)
        for member in registry:
            key = normalise_event_name(member.event_name)
            if _catalog.by_key.get(key) is member:
                del _catalog.by_key[key]
                del _catalog.origins[key]
            if _catalog.by_name.get(member.event_name) is member:
                del _catalog.by_name[member.event_name]
