"""The receiver that delivers inline, on the emitting thread, for transports that do no I/O."""

from __future__ import annotations

from typing import Any

from instrumentor._emission import Emission
from instrumentor._protocols import Transport

__all__ = ["InlineDestination"]


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
