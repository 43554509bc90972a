"""The transport protocol, and the receiver that delivers inline on the emitting thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from instrumentor._emitter import Emission
    from instrumentor._messages import Message

__all__ = ["InlineDestination", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """Delivers batches of messages somewhere. Small and synchronous on purpose.

    ``deliver`` is called with the messages of one or more emissions, in order. Returning means
    the whole batch was accepted; raising means it was not (delivery decides what to retry).
    ``close`` releases what the transport holds. This release delivers inline and never closes a
    transport itself: an application that retires one closes it.
    """

    def deliver(self, batch: Sequence[Message]) -> None:
        """Deliver ``batch``; raise if it was not accepted."""

    def close(self) -> None:
        """Release connections and files; deliver nothing afterwards."""


class InlineDestination:
    """A signal receiver that hands each emission's messages straight to a transport.

    For transports that do no I/O worth queueing (memory, console). Failures are reported
    by the signal as ``receiver_error`` incidents and never reach the caller.

    Args:
        transport: The transport to deliver to.
    """

    __slots__ = ("transport",)

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def __call__(self, sender: Any, *, emission: Emission) -> None:
        """Deliver the emission's messages now."""
        self.transport.deliver(emission.messages)

    def __repr__(self) -> str:
        return f"InlineDestination({self.transport!r})"
