"""Bundle state: what each user's record at the provider holds, and so which calls are due.

Accoil, like every destination that links users to groups, attributes a track to the groups its
user was **last linked to** (by an identify carrying the account, and by group calls carrying the
user). So the state mirrors that membership, per user:

* the traits and account of the user's last identify;
* per hierarchy level, the group the user was last linked to, and that group's name, traits and
  parent as sent.

An identify is due when the user's traits (or account) differ from the last ones sent, changing
back included. A group call for a level is due when the user's current group there differs from
the one last linked (a switch, or a switch back), or when that group's traits changed.
``bundle_ttl`` bounds how long a record is trusted: after it the calls go out again anyway. Only
the most recently active users are remembered (a capped LRU, :data:`MAX_USERS`).

A call is recorded when it is queued, so that concurrent tracks of a user do not repeat it. When
a destination drops it or gives it up, :meth:`BundleState.forget` removes the record, and the
user's next track sends it again.

Each execution context keeps its last verdict (:data:`last_verdict`): while it is fresh, the
emitter's hot path decides with one context-variable read. A record that changes under other
contexts (a switch made elsewhere, a rollback) renews the runtime's generation, which makes every
cached verdict stale at once.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from instrumentor._context import AnalyticsContext, Group
from instrumentor._messages import GroupMessage, IdentifyMessage
from instrumentor._registry import EventRegistry, GroupHierarchy

if TYPE_CHECKING:
    from instrumentor._state import Runtime

__all__ = [
    "MAX_USERS",
    "NO_BUNDLE",
    "Bundle",
    "BundleState",
    "fingerprint",
    "last_verdict",
    "parent_id",
]

#: Whether an identify is due, and the levels whose group calls are due, top first.
Bundle = tuple[bool, tuple[str, ...]]
#: Nothing due: the track goes out alone.
NO_BUNDLE: Bundle = (False, ())
#: The most users whose records are kept; the least recently active are forgotten first.
MAX_USERS = 50_000
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


def group_at(ctx: AnalyticsContext, level: str, event_level: str, group_id: str | None) -> Any:
    """The group a track links its user to at ``level``: the bound one, or the event's own id."""
    group = ctx.groups.get(level)
    if level == event_level and group_id is not None and (group is None or group.id != group_id):
        return Group(group_id)
    return group


def identify_fingerprint(
    ctx: AnalyticsContext, hierarchy: GroupHierarchy, user_id: str, top_id: str | None = None
) -> Any:
    """What an identify of ``user_id`` says: its traits and its account (``top_id`` if named)."""
    top = ctx.groups.get(hierarchy.top)
    if top_id is not None and (top is None or top.id != top_id):
        top = Group(top_id)
    if top is not None and user_id == top.id and ctx.user_id != user_id:
        return fingerprint("account", top.name, top.traits, top.id)  # instance-level tracking
    top_id = top.id if top is not None else None
    if not ctx.user_traits:  # no traits: no repr to take
        return hash((None, top_id))
    return fingerprint(ctx.user_traits, top_id)


def group_fingerprint(
    ctx: AnalyticsContext, hierarchy: GroupHierarchy, level: str, group: Group
) -> Any:
    """What a group call for ``group`` at ``level`` says: name, traits and parent."""
    return _group_print(group, parent_id(ctx, hierarchy, level))


def _group_print(group: Group, parent: str | None) -> Any:
    """:func:`group_fingerprint` with the parent known (no repr to take without traits)."""
    if not group.traits:
        return hash((group.name, parent))
    return fingerprint(group.name, group.traits, parent)


#: The last verdict in this execution context (thread or task): ``(context serial, runtime
#: generation, hierarchy path key, expiry, traced)``. While it names the current context and
#: generation, its expiry is ahead and its path is the event's, no identify or group call is
#: due: the emitter's hot path reads it (one ``ContextVar.get``); only :meth:`BundleState.due`
#: sets it. Numbers, not objects: it keeps no context (no user's traits) and no runtime alive.
last_verdict: contextvars.ContextVar[tuple[int, int, str, float, bool] | None] = (
    contextvars.ContextVar("instrumentor_bundle_verdict", default=None)
)


class _Member:
    """What the provider last received about one user (see the module docstring)."""

    __slots__ = ("identified", "links")

    def __init__(self) -> None:
        #: ``(fingerprint, expiry)`` of the last identify, or ``None``.
        self.identified: tuple[Any, float] | None = None
        #: level -> ``(group id, fingerprint, expiry)`` of the last call linking this user
        #: there (at the top, with ``identify_links_top``: the identify's account, no print).
        self.links: dict[str, tuple[str, Any, float]] = {}

    def live(self, now: float) -> bool:
        """Whether any of its records is still trusted at ``now`` (a verdict may rest on it)."""
        if self.identified is not None and self.identified[1] > now:
            return True
        return any(link[2] > now for link in self.links.values())


_states: weakref.WeakSet[BundleState] = weakref.WeakSet()


class BundleState:
    """The membership memory of one installed configuration.

    Deciding and queuing a bundle happen under :attr:`lock` (the emitter holds it from
    :meth:`due` through the dispatch), so that the order in which one user's calls are queued
    is the order in which they were recorded; rollbacks and explicit calls take it too, and
    renew the runtime's generation under it.

    Args:
        ttl: Seconds a record is trusted (``0``: nothing is remembered, every track carries its
            identify and every group call of its path).
        identify_links_top: Whether an identify links its user to the account it names (true
            when every destination is Accoil). The account's group call is then due once per
            account and change of its traits, not once per user.
    """

    __slots__ = ("__weakref__", "_members", "_renew", "_tops", "identify_links_top", "lock", "ttl")

    def __init__(self, ttl: float, identify_links_top: bool = False) -> None:
        self.ttl = ttl
        self.identify_links_top = identify_links_top
        self._members: OrderedDict[str, _Member] = OrderedDict()
        #: account id -> ``(fingerprint, expiry)`` of its last group call (identify_links_top).
        self._tops: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        #: Set when a record that a cached verdict may rest on was evicted.
        self._renew = False
        #: Held from a decision through its dispatch, by rollbacks and by explicit calls.
        self.lock = threading.RLock()
        _states.add(self)

    def remembered(self) -> int:
        """How many users' records are kept now."""
        return len(self._members)

    def accounts(self) -> int:
        """How many accounts' group calls are remembered once for all their users."""
        return len(self._tops)

    def linked_group(self, user_id: str, level: str) -> str | None:
        """The group ``user_id`` was last linked to at ``level``, as far as this state knows."""
        member = self._members.get(user_id)
        link = member.links.get(level) if member is not None else None
        return link[0] if link is not None else None

    # --- what the emitter calls ---------------------------------------------------------------

    def due(
        self,
        rt: Runtime,
        ctx: AnalyticsContext,
        event: EventRegistry,
        user_id: str,
        group_id: str | None,
        now: float,
        explicit: bool,
        traced: bool = False,
    ) -> Bundle:
        """The identify and group calls due with a track of ``event`` at ``now``, recorded.

        Called when :data:`last_verdict` is not fresh for this context, generation and path
        (the emitter checks that first, on its hot path), with :attr:`lock` held until the
        emission is dispatched. ``traced`` is kept with the new verdict.
        """
        routing = event.routing
        hierarchy = type(event).hierarchy
        if self.ttl <= 0:
            levels = hierarchy.path_to(routing.level)
            return True, tuple(
                u for u in levels if group_at(ctx, u, routing.level, group_id) is not None
            )
        with self.lock:
            bundle, changed, fresh_until = self._due_calls(
                ctx, hierarchy, user_id, routing.level, group_id, now
            )
            if changed or self._renew:
                self._renew = False
                rt.renew_generation()
            if not explicit:  # explicit group ids are unbounded: decided on the slow path
                verdict = (ctx.serial, rt.generation, routing.path_key, fresh_until, traced)
                last_verdict.set(verdict)
        return bundle

    def record_identify(
        self,
        rt: Runtime,
        ctx: AnalyticsContext,
        hierarchy: GroupHierarchy,
        user_id: str,
        now: float,
    ) -> None:
        """Record an identify sent outside a track, so that tracks do not repeat it."""
        if self.ttl <= 0:
            return
        fp = identify_fingerprint(ctx, hierarchy, user_id)
        top = ctx.groups.get(hierarchy.top)
        with self.lock:
            member = self._member(user_id, now)
            member.identified = (fp, now + self.ttl)
            if self.identify_links_top and top is not None:
                member.links[hierarchy.top] = (top.id, None, now + self.ttl)
            rt.renew_generation()  # an explicit call: rare, and other contexts must see it

    def record_group(
        self,
        rt: Runtime,
        ctx: AnalyticsContext,
        hierarchy: GroupHierarchy,
        level: str,
        group: Group,
        user_id: str | None,
        now: float,
    ) -> None:
        """Record a group call sent outside a track (it links ``user_id``, if any, to it)."""
        if self.ttl <= 0:
            return
        fp = group_fingerprint(ctx, hierarchy, level, group)
        expiry = now + self.ttl
        with self.lock:
            if level == hierarchy.top and self.identify_links_top:
                self._remember_top(group.id, (fp, expiry))
                fp = None  # the user's account link, as an identify records it
            if user_id is not None:
                self._member(user_id, now).links[level] = (group.id, fp, expiry)
            rt.renew_generation()  # an explicit call: rare, and other contexts must see it

    # --- what destinations call, through the emitter (with the lock held) ---------------------

    def forget(self, messages: Iterable[object]) -> bool:
        """Forget the records of identify and group calls that will never arrive.

        A group call is forgotten only while the record still names its group (a later switch
        stands). Returns whether anything was forgotten.
        """
        forgotten = False
        with self.lock:
            for message in messages:
                if isinstance(message, IdentifyMessage):
                    forgotten |= self._forget(message.user_id, True, {})
                elif isinstance(message, GroupMessage):
                    links = {message.group_type: message.group_id}
                    forgotten |= self._forget(message.user_id, False, links)
        return forgotten

    def forget_calls(
        self, user_id: str | None, identify: bool, links: Mapping[str, str | None]
    ) -> bool:
        """Forget the identify (if ``identify``) and the group calls ``links`` (level -> id)."""
        with self.lock:
            return self._forget(user_id, identify, links)

    # --- under the lock -----------------------------------------------------------------------

    def _forget(self, user_id: str | None, identify: bool, links: Mapping[str, str | None]) -> bool:
        """Forget records; a group's only while it names the same id (``None``: any)."""
        forgotten = False
        for group_id in links.values():
            if group_id is not None and self._tops.pop(group_id, None) is not None:
                forgotten = True
        member = self._members.get(user_id) if user_id is not None else None
        if member is None:
            return forgotten
        if identify and member.identified is not None:
            member.identified = None
            forgotten = True
        for level, group_id in links.items():
            link = member.links.get(level)
            if link is not None and (group_id is None or link[0] == group_id):
                del member.links[level]
                forgotten = True
        return forgotten

    def _member(self, user_id: str, now: float) -> _Member:
        """The record of ``user_id``, made the most recent; the least recent beyond the cap go."""
        members = self._members
        member = members.get(user_id)
        if member is None:
            member = members[user_id] = _Member()
            while len(members) > MAX_USERS:
                _, evicted = members.popitem(last=False)
                self._renew = self._renew or evicted.live(now)
        else:
            members.move_to_end(user_id)
        return member

    def _remember_top(self, group_id: str, record: tuple[Any, float]) -> None:
        tops = self._tops
        tops[group_id] = record
        tops.move_to_end(group_id)
        while len(tops) > MAX_USERS:
            tops.popitem(last=False)

    def _due_calls(
        self,
        ctx: AnalyticsContext,
        hierarchy: GroupHierarchy,
        user_id: str,
        level: str,
        group_id: str | None,
        now: float,
    ) -> tuple[Bundle, bool, float]:
        """The calls due, whether a record changed value, and until when nothing else is due."""
        member = self._member(user_id, now)
        fresh_until = until = now + self.ttl
        top_level, links_top, links = hierarchy.top, self.identify_links_top, member.links
        fp = identify_fingerprint(ctx, hierarchy, user_id, group_id if level == top_level else None)
        record = member.identified
        top = group_at(ctx, top_level, level, group_id)
        top_link = links.get(top_level) if links_top else None
        # Linked to another account by a group call made elsewhere: the identify re-links.
        relinked = top is not None and top_link is not None and top_link[0] != top.id
        identify = relinked or record is None or record[0] != fp or record[1] <= now
        changed = relinked or (record is not None and record[0] != fp)
        if identify:
            member.identified = (fp, fresh_until)
            if links_top and top is not None:
                links[top_level] = (top.id, None, fresh_until)
        else:
            until = min(until, record[1])  # type: ignore[index]
        levels: list[str] = []
        parent: str | None = None  # the nearest bound group above, as the loop goes down
        for upper in hierarchy.path_to(level):
            group = group_at(ctx, upper, level, group_id)
            if group is None:
                continue
            gfp = _group_print(group, parent)
            parent = group.id
            if upper == top_level and links_top:
                # The identify links the user (its fingerprint holds the account id): the
                # group call is about the account's traits, once for all its users.
                known = self._tops.get(group.id)
                if known is None or known[0] != gfp or known[1] <= now:
                    levels.append(upper)
                    self._remember_top(group.id, (gfp, fresh_until))
                else:
                    until = min(until, known[1])
                continue
            link = links.get(upper)
            if link is None or link[0] != group.id or link[1] != gfp or link[2] <= now:
                levels.append(upper)
                changed = changed or (link is not None and link[:2] != (group.id, gfp))
                links[upper] = (group.id, gfp, fresh_until)
            else:
                until = min(until, link[2])
        return (identify, tuple(levels)), changed, until


def _after_fork_in_child() -> None:
    # A thread of the parent (a caller deciding, a worker rolling back) may have held a state's
    # lock at fork time: in the child that thread is gone and the lock would stay held for ever.
    for state in list(_states):
        state.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
