"""Bundle state: which identify and group calls this process already sent, and so which are due.

Each track is preceded by an identify of its user and a group call for each level from the top
of the hierarchy down to the event's level, unless an identical call was made in this process
within ``bundle_ttl`` seconds. :class:`BundleState` owns that memory (a bounded record of keys
and their expiry) and the last verdict of each execution context (:data:`last_verdict`), so that
the contexts themselves stay immutable: while a context's last verdict is fresh, deciding costs
one context-variable read.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
from typing import Any

from instrumentor._context import AnalyticsContext, Group
from instrumentor._registry import EventRegistry, GroupHierarchy

__all__ = [
    "NO_BUNDLE",
    "Bundle",
    "BundleState",
    "fingerprint",
    "group_key",
    "identify_key",
    "last_verdict",
    "parent_id",
]

#: Whether an identify is due, and the levels whose group calls are due, top first.
Bundle = tuple[bool, tuple[str, ...]]
#: Nothing due: the track goes out alone.
NO_BUNDLE: Bundle = (False, ())
_MAX_SEEN = 50_000
_unique = itertools.count(1)


def fingerprint(*parts: Any) -> Any:
    """A value equal for equal traits. Traits are JSON snapshots, so their repr is faithful."""
    try:
        return hash(repr(parts))
    except Exception:  # unrepresentable: a value never seen before, so always re-sent
        return ("unique", next(_unique))


def parent_id(ctx: AnalyticsContext, hierarchy: GroupHierarchy, level: str) -> str | None:
    """The id of the nearest bound group above ``level``, or ``None``."""
    for upper in reversed(hierarchy.levels[: hierarchy.index(level)]):
        gid = ctx.group_id(upper)
        if gid is not None:
            return gid
    return None


def identify_key(ctx: AnalyticsContext, hierarchy: GroupHierarchy, user_id: str) -> tuple[Any, ...]:
    """What makes two identifies the same: user, account and traits."""
    top = ctx.groups.get(hierarchy.top)
    traits = top if user_id != ctx.user_id and top is not None else ctx.user_traits
    return ("identify", user_id, top.id if top else None, fingerprint(traits))


def group_key(
    ctx: AnalyticsContext, hierarchy: GroupHierarchy, level: str, group: Group, user_id: str | None
) -> tuple[Any, ...]:
    """What makes two group calls the same: level, group, parent, user, name and traits.

    The user is part of the key: a group call also links its user to the group, so every user
    of a workspace gets its own (once per ``bundle_ttl``), not only the first one.
    """
    parent = parent_id(ctx, hierarchy, level)
    return ("group", level, group.id, parent, user_id, fingerprint(group.name, group.traits))


#: The last verdict in this execution context (thread or task): ``(context serial, owner
#: generation, hierarchy path key, expiry, traits fingerprint, traced)``. While it names the current
#: context and runtime, its expiry is ahead and its path is the event's, no identify or group
#: call is due: the emitter's hot path reads it (one ``ContextVar.get``); only
#: :meth:`BundleState.due` sets it. Numbers, not objects: it keeps no context (no user's traits)
#: and no replaced runtime alive. The context itself stays immutable.
last_verdict: contextvars.ContextVar[tuple[int, int, str, float, Any, bool] | None] = (
    contextvars.ContextVar("instrumentor_bundle_verdict", default=None)
)


class BundleState:
    """The de-duplication memory of one installed configuration.

    Args:
        ttl: Seconds a sent identify or group call covers (``0``: nothing is remembered, every
            track carries its identify and group calls).
    """

    __slots__ = ("_lock", "_seen", "owner", "ttl")

    def __init__(self, ttl: float, owner: int = 0) -> None:
        self.ttl = ttl
        #: The number :data:`last_verdict` entries of this state carry (its runtime's generation).
        self.owner = owner
        #: key -> expiry (``time.time()``, the clock the emission reads anyway).
        self._seen: dict[Any, float] = {}
        self._lock = threading.Lock()

    def remembered(self) -> int:
        """How many sent calls (and bundles) are remembered now."""
        return len(self._seen)

    # --- what the emitter calls ---------------------------------------------------------------

    def due(
        self,
        ctx: AnalyticsContext,
        event: EventRegistry,
        user_id: str,
        group_id: str | None,
        now: float,
        explicit: bool,
        traced: bool = False,
    ) -> Bundle:
        """The identify and group calls due with a track of ``event`` at ``now``.

        Called when :data:`last_verdict` is not fresh for this context, runtime and path (the
        emitter checks that first, on its hot path); a verdict of this context still lends its
        traits fingerprint. ``traced`` is kept with the new verdict (whether tracks of this
        context look for a span).
        """
        routing = event.routing
        verdict = last_verdict.get()
        if verdict is not None and (verdict[0] != ctx.serial or verdict[1] != self.owner):
            verdict = None  # another context's, or another configuration's
        traits_fp = verdict[4] if verdict is not None else None
        if traits_fp is None:
            traits_fp = fingerprint(ctx.user_traits, ctx.groups)
        fast = (traits_fp, routing.path_key, user_id, group_id)
        seen = self._seen
        expiry = seen.get(fast, 0.0)
        if expiry > now:
            bundle = NO_BUNDLE
        else:
            hierarchy = type(event).hierarchy
            bundle = self._due_calls(ctx, hierarchy, user_id, routing.level, group_id, now)
            expiry = now + self.ttl
            if self.ttl > 0:
                self._remember(fast, expiry, now)
        if self.ttl > 0:
            if not explicit:  # explicit group ids are unbounded: decided on the slow path
                verdict = (ctx.serial, self.owner, routing.path_key, expiry, traits_fp, traced)
                last_verdict.set(verdict)
            elif verdict is None:
                last_verdict.set((ctx.serial, self.owner, "", 0.0, traits_fp, traced))
        return bundle

    def cover_identify(
        self, ctx: AnalyticsContext, hierarchy: GroupHierarchy, user_id: str, now: float
    ) -> None:
        """Record an identify sent outside a track, so tracks do not repeat it."""
        if self.ttl > 0:
            self._remember(identify_key(ctx, hierarchy, user_id), now + self.ttl, now)

    def cover_group(
        self,
        ctx: AnalyticsContext,
        hierarchy: GroupHierarchy,
        level: str,
        group: Group,
        user_id: str | None,
        now: float,
    ) -> None:
        """Record a group call sent outside a track, so tracks do not repeat it."""
        if self.ttl > 0:
            key = group_key(ctx, hierarchy, level, group, user_id)
            self._remember(key, now + self.ttl, now)

    # --- the slow path ------------------------------------------------------------------------

    def _due_calls(
        self,
        ctx: AnalyticsContext,
        hierarchy: GroupHierarchy,
        user_id: str,
        level: str,
        group_id: str | None,
        now: float,
    ) -> Bundle:
        """Which identify/group calls the bundle needs: once per key and TTL."""
        seen = self._seen
        expiry = now + self.ttl
        always = self.ttl <= 0
        key = identify_key(ctx, hierarchy, user_id)
        identify = always or seen.get(key, 0.0) <= now
        if identify and not always:
            self._remember(key, expiry, now)
        levels: list[str] = []
        for upper in hierarchy.path_to(level):
            group = ctx.groups.get(upper)
            if upper == level and group_id is not None and (group is None or group.id != group_id):
                group = Group(group_id)
            if group is None:
                continue
            gkey = group_key(ctx, hierarchy, upper, group, user_id)
            if always or seen.get(gkey, 0.0) <= now:
                levels.append(upper)
                if not always:
                    self._remember(gkey, expiry, now)
        return identify, tuple(levels)

    def _remember(self, key: Any, expiry: float, now: float) -> None:
        """Record a sent identify/group (or bundle) in the bounded record."""
        seen = self._seen
        if len(seen) >= _MAX_SEEN:
            with self._lock:
                live = {k: v for k, v in list(seen.items()) if v > now}
                seen.clear()
                if len(live) < _MAX_SEEN // 2:
                    seen.update(live)
        seen[key] = expiry
