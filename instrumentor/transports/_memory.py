"""A transport that keeps every message in memory, for tests and the ``tracked`` fixture."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage

__all__ = ["MemoryTransport"]


class MemoryTransport:
    """Records every delivered message, in order. Thread-safe.

    Attributes:
        closed: Whether :meth:`close` was called.
    """

    #: Delivered on the emitting thread, without a queue (no I/O worth queueing).
    inline = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Message] = []
        self.closed = False

    def deliver(self, batch: Sequence[Message]) -> None:
        """Record ``batch``."""
        with self._lock:
            self._messages.extend(batch)

    def close(self) -> None:
        """Mark the transport closed; recorded messages stay readable."""
        self.closed = True

    @property
    def messages(self) -> list[Message]:
        """A copy of every message recorded so far."""
        with self._lock:
            return list(self._messages)

    @property
    def tracks(self) -> list[TrackMessage]:
        """The track messages recorded so far."""
        return [m for m in self.messages if isinstance(m, TrackMessage)]

    @property
    def identifies(self) -> list[IdentifyMessage]:
        """The identify messages recorded so far."""
        return [m for m in self.messages if isinstance(m, IdentifyMessage)]

    @property
    def groups(self) -> list[GroupMessage]:
        """The group messages recorded so far."""
        return [m for m in self.messages if isinstance(m, GroupMessage)]

    def clear(self) -> None:
        """Forget every recorded message."""
        with self._lock:
            self._messages.clear()

    def __repr__(self) -> str:
        return f"MemoryTransport({len(self._messages)} messages)"
