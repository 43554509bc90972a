"""The hand-off between emission and delivery, for code that listens to every emission.

Every emission is sent on :data:`event_emitted` with the registry class as sender and the
:class:`Emission` as the ``emission`` keyword::

    from instrumentor.signals import event_emitted

    @event_emitted.connect_via(Events)          # or event_emitted.connect(fn) for every registry
    def audit(sender, *, emission): ...

Receivers run on the emitting thread, so they must be quick: enqueue, do not deliver. They are
plain functions: connecting an ``async def`` receiver raises ``TypeError`` (its coroutine would
never run); hand the emission to a queue or a thread and run async work there.
"""

from __future__ import annotations

from instrumentor._emitter import Emission
from instrumentor._signals import EmissionSignal, event_emitted, namespace

__all__ = ["Emission", "EmissionSignal", "event_emitted", "namespace"]
