"""The protocols the layers meet at: what a transport and a signal receiver must do.

They live on the lowest floor so that settings can be typed with them and every layer can name
them without importing the layer that implements them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from instrumentor._messages import Message

__all__ = ["Receiver", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """Delivers batches of messages somewhere. Small and synchronous on purpose.

    ``deliver`` is called with the messages of one or more emissions, in order. Returning means
    the whole batch was accepted; raising means it was not (delivery decides what to retry).
    ``close`` releases what the transport holds; a queued destination calls it when it shuts
    down (``shutdown()``, the exit flush, or a new configuration retiring it). Inline transports
    (``inline = True``, called on the emitting thread) are never closed by instrumentor.
    """

    def deliver(self, batch: Sequence[Message]) -> None:
        """Deliver ``batch``; raise if it was not accepted."""

    def close(self) -> None:
        """Release connections and files; deliver nothing afterwards."""


@runtime_checkable
class Receiver(Protocol):
    """A receiver of the emission signal: called with the sender and ``emission=``; must be quick.

    A queued :class:`~instrumentor.delivery.Destination` is one; so is any function with this
    signature connected to :data:`~instrumentor.signals.event_emitted`.
    """

    def __call__(self, sender: Any, *, emission: Any) -> None:
        """Take ``emission`` (enqueue it; never deliver on the caller's thread)."""
