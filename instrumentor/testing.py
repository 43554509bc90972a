"""Test helpers that need no pytest: capture what was tracked and assert on it.

.. code-block:: python

    from instrumentor.testing import capture_events

    with capture_events() as tracked:
        create_report(data)
    tracked.assert_tracked(Events.REPORT_CREATED, group_id="proj_1")

Inside ``capture_events()`` every emission goes to a memory transport only (nothing is printed or
sent) and strict mode is on, so a missing user or group raises where the test can see it. The
previous configuration is restored on exit. Failure messages list everything that was captured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from instrumentor._diagnostics import Incident
from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor._registry import EventRegistry, forget_registry
from instrumentor._wiring import configured
from instrumentor._wiring import destinations as installed_destinations
from instrumentor.transports._memory import MemoryTransport

__all__ = ["CapturedEvents", "capture_events", "forget_registry", "installed_destinations"]

_ANY: Any = object()


def _describe(message: Message) -> str:
    if isinstance(message, TrackMessage):
        props = f" properties={dict(message.properties)!r}" if message.properties else ""
        return (
            f"track {message.event} user={message.user_id!r} group={message.group_id!r} "
            f"({message.group_type}){props}"
        )
    if isinstance(message, IdentifyMessage):
        return (
            f"identify user={message.user_id!r} group={message.group_id!r} "
            f"traits={dict(message.traits)!r}"
        )
    return (
        f"group {message.group_id!r} type={message.group_type!r} "
        f"parent={message.parent_group_id!r} traits={dict(message.traits)!r}"
    )


class CapturedEvents:
    """What was tracked inside :func:`capture_events`, with assertion helpers.

    Attributes:
        transport: The memory transport that received everything.
        incidents: Run-time incidents reported meanwhile (missing context, receiver errors).
    """

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.incidents: list[Incident] = []

    @property
    def messages(self) -> list[Message]:
        """Every message, in order."""
        return self.transport.messages

    @property
    def tracks(self) -> list[TrackMessage]:
        """Every track message, in order."""
        return self.transport.tracks

    @property
    def identifies(self) -> list[IdentifyMessage]:
        """Every identify message, in order."""
        return self.transport.identifies

    @property
    def groups(self) -> list[GroupMessage]:
        """Every group message, in order."""
        return self.transport.groups

    @property
    def event_names(self) -> list[str]:
        """The names of the tracked events, in order."""
        return [m.event for m in self.tracks]

    def clear(self) -> None:
        """Forget what was captured so far."""
        self.transport.clear()
        self.incidents.clear()

    def _summary(self) -> str:
        lines = [f"  {i}. {_describe(m)}" for i, m in enumerate(self.messages, 1)]
        captured = "\n".join(lines) if lines else "  (nothing)"
        text = f"Captured {len(lines)} message(s):\n{captured}"
        if self.incidents:
            text += "\nIncidents:\n" + "\n".join(
                f"  - {i.kind}: {i.message}" for i in self.incidents
            )
        return text

    def assert_tracked(
        self,
        event: EventRegistry,
        *,
        times: int | None = None,
        user_id: str = _ANY,
        group_id: str | None = _ANY,
        properties: Mapping[str, Any] = _ANY,
    ) -> TrackMessage:
        """Assert ``event`` was tracked (with the given fields, when given).

        Args:
            event: The plan member.
            times: Exactly how many matching tracks there must be; any number >= 1 if omitted.
            user_id: The user id it must carry.
            group_id: The group id it must carry.
            properties: Properties it must carry (a subset match).

        Returns:
            The last matching track message.

        Raises:
            AssertionError: Listing everything captured, when no (or the wrong number of)
                tracks match.
        """
        __tracebackhide__ = True
        matching = [
            m
            for m in self.tracks
            if m.event == event.event_name
            and (user_id is _ANY or m.user_id == user_id)
            and (group_id is _ANY or m.group_id == group_id)
            and (
                properties is _ANY
                or all(m.properties.get(k, _ANY) == v for k, v in properties.items())
            )
        ]
        wanted = [
            f"{name}={value!r}"
            for name, value in (
                ("user_id", user_id),
                ("group_id", group_id),
                ("properties", properties),
            )
            if value is not _ANY
        ]
        expectation = f"{event.event_name}" + (f" with {', '.join(wanted)}" if wanted else "")
        if not matching:
            raise AssertionError(f"Expected {expectation} to be tracked.\n{self._summary()}")
        if times is not None and len(matching) != times:
            raise AssertionError(
                f"Expected {expectation} to be tracked {times} time(s), found {len(matching)}.\n"
                f"{self._summary()}"
            )
        return matching[-1]

    def assert_not_tracked(self, event: EventRegistry) -> None:
        """Assert ``event`` was not tracked at all."""
        __tracebackhide__ = True
        if any(m.event == event.event_name for m in self.tracks):
            raise AssertionError(
                f"Expected {event.event_name} not to be tracked.\n{self._summary()}"
            )

    def assert_nothing_tracked(self) -> None:
        """Assert no message at all was emitted."""
        __tracebackhide__ = True
        if self.messages:
            raise AssertionError(f"Expected nothing to be tracked.\n{self._summary()}")

    def assert_identified(
        self, user_id: str, *, traits: Mapping[str, Any] = _ANY
    ) -> IdentifyMessage:
        """Assert an identify of ``user_id`` was sent (with at least ``traits``, when given)."""
        __tracebackhide__ = True
        for m in reversed(self.identifies):
            if m.user_id == user_id and (
                traits is _ANY or all(m.traits.get(k, _ANY) == v for k, v in traits.items())
            ):
                return m
        wanted = f" with traits including {dict(traits)!r}" if traits is not _ANY else ""
        raise AssertionError(f"Expected an identify of {user_id!r}{wanted}.\n{self._summary()}")

    def assert_grouped(
        self,
        group_id: str,
        *,
        group_type: str = _ANY,
        parent_group_id: str | None = _ANY,
    ) -> GroupMessage:
        """Assert a group call for ``group_id`` was sent (with the given level and parent)."""
        __tracebackhide__ = True
        for m in reversed(self.groups):
            if (
                m.group_id == group_id
                and (group_type is _ANY or m.group_type == group_type)
                and (parent_group_id is _ANY or m.parent_group_id == parent_group_id)
            ):
                return m
        wanted = [
            f"{name}={value!r}"
            for name, value in (("group_type", group_type), ("parent_group_id", parent_group_id))
            if value is not _ANY
        ]
        detail = f" with {', '.join(wanted)}" if wanted else ""
        raise AssertionError(f"Expected a group call for {group_id!r}{detail}.\n{self._summary()}")

    def __repr__(self) -> str:
        return f"<CapturedEvents {self.event_names!r}>"


@contextlib.contextmanager
def capture_events(*, strict: bool = True, **settings: Any) -> Iterator[CapturedEvents]:
    """Capture every emission in the block in memory, then restore the configuration.

    Args:
        strict: Raise on missing context (the default, so tests see it).
        settings: Further :func:`~instrumentor.configure` keywords, e.g. ``instance_level=True``,
            ``bundle_ttl=0`` or ``debug=True``. An ``on_error`` hook is called as well as the
            capture's own.

    Yields:
        The :class:`CapturedEvents`, filled as the block runs.

    Raises:
        TypeError: If ``transports`` is given: the capture is the transport. Connect an extra
            receiver to :data:`instrumentor.signals.event_emitted` instead.
    """
    if "transports" in settings:
        raise TypeError(
            "capture_events() replaces the transports with its own memory transport; connect "
            "an extra receiver to instrumentor.signals.event_emitted to observe emissions as well"
        )
    transport = MemoryTransport()
    captured = CapturedEvents(transport)
    user_hook = settings.pop("on_error", None)

    def on_error(incident: Incident) -> None:
        captured.incidents.append(incident)
        if user_hook is not None:
            user_hook(incident)

    options: dict[str, Any] = {"enabled": True, "debug": False, **settings}
    with configured(transports=(transport,), strict=strict, on_error=on_error, **options):
        yield captured
