"""Where messages go: the :class:`Transport` protocol, the built-in transports, and the messages.

A transport receives batches of :class:`Message` objects (identify, group and track) and
delivers them; see :class:`Transport` for the contract a custom one must keep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from instrumentor._lazy import lazy_names
from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor._protocols import Transport

if TYPE_CHECKING:  # loaded on first use (see __getattr__); type checkers and IDEs see them here
    from instrumentor.transports._accoil import AccoilTransport
    from instrumentor.transports._console import ConsoleTransport
    from instrumentor.transports._memory import MemoryTransport
    from instrumentor.transports._otel import OTelTransport
    from instrumentor.transports._segment import SegmentTransport

__all__ = [
    "AccoilTransport",
    "ConsoleTransport",
    "GroupMessage",
    "IdentifyMessage",
    "MemoryTransport",
    "Message",
    "OTelTransport",
    "SegmentTransport",
    "TrackMessage",
    "Transport",
]

#: The transports, each imported from its module on first use: the HTTP ones bring httpx,
#: the OpenTelemetry one the OpenTelemetry API, which a process using neither never needs.
_LAZY = {
    "AccoilTransport": "instrumentor.transports._accoil",
    "ConsoleTransport": "instrumentor.transports._console",
    "MemoryTransport": "instrumentor.transports._memory",
    "OTelTransport": "instrumentor.transports._otel",
    "SegmentTransport": "instrumentor.transports._segment",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
